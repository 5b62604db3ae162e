"""Fix hints in the syntax of the command that prints them.

Errors raised below the CLI (:mod:`matta_rec.data`, :mod:`matta_rec.training`)
give their fix in ``matta-rec train`` terms: a config key is spelled
``--set KEY=VALUE``, e.g. "pass --set data.skip_bad_shards=true to quarantine
it".  ``train`` and ``ablate`` take ``--set``; the other commands do not, so
:func:`for_command` rewrites those hints into something the user can do:

- ``evaluate``, ``export``, ``demo`` read shards but never quarantine them:
  "pass --set data.skip_bad_shards=true to quarantine it" becomes "leave it
  out of --data";
- any other ``--set`` hint names the command that has the option:
  "pass --set K=V" becomes "run matta-rec train with --set K=V", a bare
  "--set K=V" becomes "matta-rec train --set K=V".

Example:

>>> fix = "re-write the shard, or pass --set data.skip_bad_shards=true to quarantine it"
>>> for_command(fix, "train") == fix
True
>>> for_command(fix, "evaluate")
're-write the shard, or leave it out of --data'
>>> for_command(fix, "inspect-data")
're-write the shard, or run matta-rec train with --set data.skip_bad_shards=true to quarantine it'
"""

from __future__ import annotations

import re

__all__ = ["for_command", "SET_COMMANDS"]

#: Commands that take ``--set KEY=VALUE``.
SET_COMMANDS = frozenset({"train", "ablate"})

#: Commands that read shards but cannot quarantine a bad one.
_NO_QUARANTINE = frozenset({"evaluate", "export", "demo"})

_QUARANTINE = re.compile(
    r"pass --set data\.skip_bad_shards=true to quarantine (it|them)(?: and (?:continue|go on))?"
)
_PASS_SET = re.compile(r"\bpass --set (\S+=\S+)")
_SET = re.compile(r"(?<![\w-])(?<!with )--set (\S+=\S+)")


def for_command(text: str, command: str | None) -> str:
    """``text`` (an error message or fix) with its ``--set`` hints valid for ``command``.

    Args:
        text: the message.
        command: the ``matta-rec`` sub-command printing it (``None``: unchanged).

    Returns:
        The message, rewritten when ``command`` has no ``--set`` option.
    """
    if command is None or command in SET_COMMANDS:
        return text
    if command in _NO_QUARANTINE:
        text = _QUARANTINE.sub(r"leave \1 out of --data", text)
    text = _PASS_SET.sub(r"run matta-rec train with --set \1", text)
    return _SET.sub(r"matta-rec train --set \1", text)
