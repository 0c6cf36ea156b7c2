"""The HTTP API under ``/api/v1``: feature parts (time-bound access, and more to come) each
bring their routes and their piece of the OpenAPI 3.1 document; personal tokens authenticate
every call and name the acting directory user."""
