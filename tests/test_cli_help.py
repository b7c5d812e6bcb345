"""Every command's --help has examples and shows every default; the seed's claims are
explained where they are shown."""

from __future__ import annotations

import argparse

import pytest

from weightdna.cli import build_parser, main


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser (and subcommand's, as 'bench rd'), each fully registered."""
    names = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    found = {}
    for name in names:
        parser = build_parser(name)._subparsers._group_actions[0].choices[name]  # type: ignore
        found[name] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub, subparser in action.choices.items():
                    found[f"{name} {sub}"] = subparser
    return found


PARSERS = _parsers()


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_help_has_examples_and_defaults(name: str) -> None:
    parser = PARSERS[name]
    if any(isinstance(a, argparse._SubParsersAction) for a in parser._actions):
        return  # a group ('bench'): its subcommands carry the examples
    text = parser.format_help()
    assert "examples:\n  weightdna " in text
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS or action.dest == "help":
            continue
        assert action.help, f"{name} {action.option_strings[0]} has no help"
        shown = formatter._expand_help(action) if action.help else ""
        flag = action.default is False or action.default is None or action.default == []
        assert flag or "default" in shown, f"{name} {action.option_strings[0]} hides its default"


def test_defaults_are_shown_in_the_text(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for text in ("(default: siren)", "(default: cosine)", "(default: 0)", "(default: 2000)"):
        assert text in out


def test_seed_is_explained_where_the_claims_are_shown(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "the seed is" in out.lower()
