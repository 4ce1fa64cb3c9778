"""An installed app with a tasks module that only discovery imports."""
