"""The parts of the compose form; ``smtp_magic.widgets.ComposeForm`` puts them together."""
