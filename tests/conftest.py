from __future__ import annotations

import os

# Never let a developer's environment leak into the tests.
for _k in [k for k in os.environ if k.startswith("LOA_") and not k.startswith("LOA_TEST_")]:
    del os.environ[_k]
