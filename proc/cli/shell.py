"""``procctl shell``: Python with the database connected, every model imported and the
helpers of ``proc.cli.shell_helpers`` (stuck, recent_failures, describe, reset, redispatch,
cancel).

IPython when it is installed (the extra ``shell``: ``pip install 'proc[shell]'``), else
Python's own interactive shell with readline tab completion; ``--plain`` asks for Python's
own shell even when IPython is installed. The banner's examples run as pasted, on an empty
database too.
"""
from __future__ import annotations

import code

import click

from .. import registry
from ..store import db
from . import shell_helpers


def shell_namespace() -> dict:
    """What the shell starts with: proc's public names, every Proc subclass, ``db`` and the helpers."""
    import proc

    db.connect()
    namespace = {name: getattr(proc, name) for name in proc.__all__}
    namespace.update({cls.__name__: cls for cls in registry.load_models()})
    namespace["db"] = db.database()
    namespace.update(shell_helpers.HELPERS)
    return namespace


def banner(namespace: dict, flavour: str) -> str:
    """The banner: where the shell is, the models, the helpers and examples that run as pasted."""
    models = sorted(cls.__name__ for cls in registry.proc_classes() if cls.__name__ in namespace)
    kinds = sorted(registry.kinds(), key=lambda k: k.name)
    model = kinds[0].cls.__name__ if kinds else (models[0] if models else "Proc")
    kind = kinds[0].name if kinds else "collection.method"
    return "\n".join([
        f"proc shell ({flavour}): database {db.database().name}; models: {', '.join(models) or 'none'}",
        f"Helpers (actions are recorded as done by {shell_helpers.actor()}):",
        "  stuck()                    what needs attention, and why",
        "  recent_failures(kind)      the latest FAILUREs of a kind, a collection or a model",
        "  describe(doc)  reset(doc)  redispatch(doc)  cancel(doc)",
        "                             doc: a document, \"collection/id\" or a row of stuck()",
        "Try:",
        "  stuck()",
        f"  recent_failures({kind!r})",
        f"  describe({model}.objects.first())",
    ])


def _plain(namespace: dict) -> None:
    try:
        import readline
        import rlcompleter
    except ImportError:  # no readline (some platforms): no completion
        pass
    else:
        readline.set_completer(rlcompleter.Completer(namespace).complete)
        readline.parse_and_bind("tab: complete")
    code.interact(banner=banner(namespace, "Python; tab completes"), local=namespace, exitmsg="")


def _ipython(namespace: dict) -> bool:
    try:
        import IPython
        from traitlets.config import Config
    except ImportError:
        return False
    config = Config()
    config.TerminalInteractiveShell.banner1 = banner(namespace, f"IPython {IPython.__version__}") + "\n"
    config.TerminalInteractiveShell.enable_tip = False
    config.TerminalInteractiveShell.confirm_exit = False
    config.TerminalInteractiveShell.term_title = False
    IPython.start_ipython(argv=[], user_ns=namespace, config=config)
    return True


@click.command()
@click.option("--plain", is_flag=True, help="Python's own shell, even when IPython is installed.")
def shell(plain: bool):
    """Open Python (IPython when installed) with the database connected, every Proc model
    imported and helpers: stuck(), recent_failures(kind), describe(doc), reset(doc),
    redispatch(doc), cancel(doc)."""
    namespace = shell_namespace()
    if plain or not _ipython(namespace):
        _plain(namespace)
