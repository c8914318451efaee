"""Settings: one model of options, read once, validated at start.

Sources, later ones winning: the defaults, the TOML file (``--config``,
``DIGEST_CONFIG`` or ``./digest.toml`` when present), then ``DIGEST_<NAME>``
environment variables. Relative paths in the file are taken relative to the
file's folder; relative paths elsewhere to the working directory.

- ``model``: ``Settings``, the one declaration of every option, and ``OPTIONS``, its view;
- ``checks``: each setting's own check;
- ``options``: ``Option``, one setting as the docs and the command line see it;
- ``sources``: the file and the environment as pydantic-settings sources;
- ``load``: ``load_settings``, and the text ``digest init`` writes.
"""

from digest.settings.load import load_settings
from digest.settings.model import Settings

__all__ = ["Settings", "load_settings"]
