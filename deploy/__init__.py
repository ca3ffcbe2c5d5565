"""Satoyama Edge deployment: SD card provisioning, signed OTA bundles, the updater, rollouts.

What an installer and an operator run, and what runs on the device to update it:

- :mod:`deploy.provision` writes a device's identity, configuration, network
  settings and first-boot hook onto a Raspberry Pi OS boot partition (an
  image file, without mounting it, or a mounted card);
- :mod:`deploy.bundle` builds and verifies signed OTA bundles;
- :mod:`deploy.updater` installs them on the device with rollback;
- :mod:`deploy.fleet` announces updates and records which device runs what.

``deploy`` may import the daemon's configuration validator; nothing imports ``deploy``.
"""
