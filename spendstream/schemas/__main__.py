"""``python -m spendstream.schemas``: rewrite the published JSON Schema files."""

from spendstream.schemas.jsonschema_files import write_all

for path in write_all():
    print(path)
