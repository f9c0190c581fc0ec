"""HTTP handlers: thin (parse -> store -> response). Errors propagate to the middleware in app.py."""
