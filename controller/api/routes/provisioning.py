"""Boards' credentials: issue one (the board's provisioning bundle, shown once) and revoke
it (the broker refuses the board from then on)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from controller.api.deps import CurrentUser, RuntimeDep, SessionDep
from controller.fleet import provisioning
from devices.provisioning import ProvisioningBundle

router = APIRouter(tags=["provisioning"])


@router.post("/clusters/{cluster_id}/credentials", status_code=201,
             response_model=ProvisioningBundle)
def issue(cluster_id: str, db: SessionDep, rt: RuntimeDep,
          user: CurrentUser) -> ProvisioningBundle:
    """A new broker credential for the board, in the bundle a technician loads onto it.
    The secret is in this answer only (the controller keeps its hash); any earlier
    credential of the board stops working. Admins and technicians of its area."""
    return provisioning.provision(db, rt.settings, rt.key.verify_key, rt.broker, user,
                                  cluster_id)


@router.delete("/clusters/{cluster_id}/credentials", status_code=204)
def revoke(cluster_id: str, db: SessionDep, rt: RuntimeDep, user: CurrentUser) -> Response:
    """The board can no longer connect to the broker (a lost or stolen board)."""
    provisioning.revoke(db, rt.broker, user, cluster_id)
    return Response(status_code=204)
