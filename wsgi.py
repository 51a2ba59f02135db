"""What gunicorn serves: ``gunicorn wsgi:app``. Refuses a database that is not at the head."""

from api import create_app
from api.services import EXTENSION
from registry.db import require_head

app = create_app()
require_head(app.extensions[EXTENSION].engine)
