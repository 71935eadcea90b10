"""What a board is given at installation: its provisioning bundle (protocol §1.2).

A technician loads the bundle onto the board once (a file on its storage, or typed into its
set-up page). It carries everything the board needs to join the network and nothing it must
not know: its own broker credential, never another board's; the controller's *public* key,
never the private one. Pure: no I/O.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from devices.topics import ID_PATTERN

__all__ = ["ProvisioningBundle"]

AreaId = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


class ProvisioningBundle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = 1
    cluster_id: AreaId = Field(description="the board's cluster id; its MQTT username and "
                                           "client id")
    username: str = Field(description="MQTT username (equal to cluster_id)")
    password: str = Field(min_length=16, description="the board's own broker secret; the "
                          "broker refuses it once the board is retired or replaced")
    broker_url: str = Field(pattern=r"^mqtts?://[^/\s]+$", description="mqtt://host:port, "
                            "or mqtts://host:port for TLS; the nodes of a broker cluster "
                            "comma-separated after one scheme (mqtt://n1:1883,n2:1883)")
    ca_pem: str | None = Field(None, description="PEM of the CA that signed the broker's "
                                                 "TLS certificate, for mqtts")
    controller_public_key: str = Field(pattern=r"^[0-9a-f]{64}$",
                                       description="Ed25519 key commands are signed with")
    key_id: str = Field(pattern=r"^[0-9a-f]{16}$")
    area_path: list[AreaId] = Field(min_length=1, description="the board's area, then each "
                                    "ancestor up to the top: its command subscriptions")
    issued_at: AwareDatetime
