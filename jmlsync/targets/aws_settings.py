"""The settings of the AWS target kinds, ``aws-identity-center`` and ``aws-iam`` (kept apart
from the connectors, so reading the configuration never loads the AWS SDK)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from jmlsync.targets.settings import TargetSection


class AwsIdentityCenterTargetSettings(TargetSection):
    """``kind = "aws-identity-center"``: permission sets assigned on accounts.

    Credentials come from the standard AWS chain (environment, shared config, instance or
    container roles), never from this file.
    """

    kind: Literal["aws-identity-center"]
    region: Annotated[str, Field(min_length=1)]
    endpoint_url: str | None = None
    instance_arn: str | None = None
    identity_store_id: str | None = None
    provision_users: bool = True
    delete_users_on_leave: bool = False


class AwsIamTargetSettings(TargetSection):
    """``kind = "aws-iam"``: IAM groups and managed policies of IAM users."""

    kind: Literal["aws-iam"]
    region: Annotated[str, Field(min_length=1)] = "us-east-1"
    endpoint_url: str | None = None
    provision_users: bool = True
    delete_users_on_leave: bool = False
    user_path: str = "/"
