"""One exception root for the deployment tools; leaves also inherit the builtin they resemble."""

from __future__ import annotations


class DeployError(Exception):
    """Something the operator, installer or device updater must be told about, in one line."""


class InsecureKeyError(DeployError, PermissionError):
    """A private key file is readable by group or others (chmod 600 it)."""


class ProvisionError(DeployError, ValueError):
    """Provisioning refused: bad input, an invalid configuration, an unusable card."""


class UnsafeTargetError(ProvisionError):
    """The target is (on) the disk the installer's own system runs from, or is in use."""


class ProfilePendingError(ProvisionError):
    """The wiring profile needs sensors the daemon's configuration does not know yet."""


class BundleError(DeployError, ValueError):
    """A bundle could not be built or read."""


class VerifyError(BundleError):
    """A bundle failed verification (signature, hashes, layout); nothing was unpacked."""


class UpdateError(DeployError):
    """An update could not be applied; the device keeps (or went back to) a complete release."""


class UpdateRefused(UpdateError):
    """An update was refused before anything changed (downgrade, too old to update from, ...)."""


class UpdateBusy(UpdateError):
    """Another updater run holds the lock."""
