"""The parts of the compose form; ``smtp_magic.widgets.ComposeForm`` puts them together."""

import logging

log = logging.getLogger(__name__)
