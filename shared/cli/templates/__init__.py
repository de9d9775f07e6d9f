"""Templates that ``ringmaster new-service`` fills in (``*.tmpl``, shipped as package data)."""
