"""Judge prompts: the built-in ones fill their placeholders; a user's file is checked."""

from __future__ import annotations

import pytest

from retort.errors import ConfigError
from retort.judge.templates import FIELDS, load_template


@pytest.mark.parametrize("kind", ["pairwise", "grade"])
def test_builtin_templates_have_their_placeholders(kind):
    template = load_template(kind)
    for field in FIELDS[kind]:
        assert "{" + field + "}" in template.text
    assert len(template.sha256) == 64


def test_render_is_one_pass_so_answers_are_never_filled_in_again():
    template = load_template("pairwise")
    text = template.render(question="Q?", answer_a="I say {answer_b}", answer_b="plain")
    assert "I say {answer_b}" in text and "plain" in text
    assert "{question}" not in text


def test_user_template_replaces_the_builtin_and_keeps_other_braces(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text('JSON {"x": 1}\n{question}\nA: {answer_a}\nB: {answer_b}\n')
    template = load_template("pairwise", path)
    assert template.render(question="q", answer_a="1", answer_b="2") == (
        'JSON {"x": 1}\nq\nA: 1\nB: 2\n'
    )
    assert template.source == str(path)


def test_missing_placeholder_names_the_file_and_the_placeholder(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("{question} {answer_a} {answr_b}")
    with pytest.raises(ConfigError, match=r"--judge-prompt .*bad.txt: the template has no "
                       r"\{answer_b\} placeholder"):  # fmt: skip
        load_template("pairwise", path)
    with pytest.raises(ConfigError, match=r"--grade-prompt .*bad.txt: .*\{reference\}"):
        load_template("grade", path)


def test_missing_template_file(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_template("pairwise", tmp_path / "nope.txt")
