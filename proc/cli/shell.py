"""``procctl shell``: Python with the database connected and every model imported."""
from __future__ import annotations

import code

import click

from .. import db, registry


def shell_namespace() -> dict:
    """What the shell starts with: proc's public names and every Proc subclass."""
    import proc

    db.connect()
    namespace = {name: getattr(proc, name) for name in proc.__all__}
    namespace.update({cls.__name__: cls for cls in registry.load_models()})
    namespace["db"] = db.database()
    return namespace


@click.command()
def shell():
    """Open Python with the database connected and every Proc model imported."""
    namespace = shell_namespace()
    banner = ("proc shell: database {} ; models: {}\n"
              "Try: Upload.objects.first().describe()").format(
        db.database().name, ", ".join(sorted(n for n, v in namespace.items() if isinstance(v, type)
                                             and hasattr(v, "_get_collection_name")
                                             and n != "Proc")))
    code.interact(banner=banner, local=namespace)
