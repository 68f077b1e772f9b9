"""One report of everything wrong with a set of inputs: every bad file,
row or option is named in a single error, never one at a time.

Authors
 * speechbrain-mrmha developers
"""

__all__ = ["SHOWN", "list_problems", "raise_problems"]

SHOWN = 20  # problems listed in one error before "... and N more"


def list_problems(problems, shown=SHOWN):
    """The problems as indented lines, at most ``shown`` of them, then how
    many more there are.

    Arguments
    ---------
    problems : list of str
        One line per problem, each naming its file, row or option.
    shown : int
        How many to list.

    Returns
    -------
    text : str
        The listed problems, one per line, indented by two spaces.

    Example
    -------
    >>> print(list_problems(["a.wav: empty", "b.wav: empty", "c.wav: empty"], 2))
      a.wav: empty
      b.wav: empty
      ... and 1 more
    """
    lines = [f"  {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)


def raise_problems(problems, what, error=ValueError, total=None):
    """Raises one ``error`` that lists every problem, or returns when there
    is none.

    Arguments
    ---------
    problems : list of str
        One line per problem, each naming its file, row or option.
    what : str
        What the problems are about, after their count: ``"files cannot be
        embedded"`` gives ``"3 files cannot be embedded:"``; for a single
        problem its first word is made singular (files -> file, entries ->
        entry).
    error : type
        The exception class.
    total : int, optional
        How many there were in all: the head then reads ``"3 of 10 files
        cannot be embedded:"``.

    Raises
    ------
    error
        When ``problems`` is not empty.

    Example
    -------
    >>> raise_problems([], "files cannot be read")
    >>> raise_problems(["x.wav: empty"], "files cannot be read")
    Traceback (most recent call last):
    ...
    ValueError: 1 file cannot be read:
      x.wav: empty
    >>> raise_problems(["x.wav: empty"], "files cannot be read", total=4)
    Traceback (most recent call last):
    ...
    ValueError: 1 of 4 files cannot be read:
      x.wav: empty
    """
    if not problems:
        return
    if total is not None:
        head = f"{len(problems)} of {total} {what}"
    else:
        first, _, rest = what.partition(" ")
        if len(problems) == 1 and first.endswith("ies"):
            first = first[:-3] + "y"
        elif len(problems) == 1 and first.endswith("s"):
            first = first[:-1]
        head = f"{len(problems)} {first} {rest}".rstrip()
    raise error(f"{head}:\n{list_problems(problems)}")
