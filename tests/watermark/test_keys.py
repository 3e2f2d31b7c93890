"""Key files: defaults, a round trip, mode 0600, no silent overwrite, and one-line errors for
files that are not keys."""

from __future__ import annotations

import json
import stat

import pytest

from retort.errors import ConfigError
from retort.watermark.keys import check_tokenizer, load_key, new_key, save_key


def test_defaults_are_kgw_quarter_two_lefthash_one():
    key = new_key()
    assert (key.scheme, key.gamma, key.delta, key.seeding, key.context_width) == (
        "kgw",
        0.25,
        2.0,
        "lefthash",
        1,
    )
    assert new_key(seeding="selfhash").context_width == 4
    assert new_key(seeding="selfhash").history == 3  # the candidate is the window's 4th id
    gumbel = new_key("gumbel", dual=True)
    assert (gumbel.gamma, gumbel.delta, gumbel.dual, gumbel.context_width) == (None, None, True, 4)


def test_round_trip_keeps_everything_and_the_file_is_private(tmp_path):
    key = new_key("kgw", gamma=0.5, delta=4.0, seeding="selfhash", context_width=3)
    path = save_key(key, tmp_path / "k.json")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = load_key(path)
    assert loaded.secrets == key.secrets and loaded.public() == key.public()
    assert loaded.prfs[0].uniform((1, 2), 3) == key.prfs[0].uniform((1, 2), 3)
    record = json.loads(path.read_text())
    assert record["format"] == "retort-watermark-key" and record["version"] == 1
    assert len(record["secrets"][0]) == 64
    assert list(tmp_path.iterdir()) == [path]  # no partial file left behind


def test_key_id_is_a_hash_of_the_secret_not_the_secret():
    import hashlib

    key = new_key()
    assert key.key_id == hashlib.sha256(key.secrets[0]).hexdigest()[:16]
    assert key.secrets[0].hex()[:16] != key.key_id
    assert "secret" not in json.dumps(key.public())


def test_existing_file_is_refused_unless_forced(tmp_path):
    path = save_key(new_key(), tmp_path / "k.json")
    first = path.read_text()
    with pytest.raises(ConfigError, match="exists; choose another --out, or --force"):
        save_key(new_key(), path)
    assert path.read_text() == first
    save_key(new_key(), path, force=True)
    assert path.read_text() != first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scheme": "gumbel", "gamma": 0.5}, "--gamma: only for --scheme kgw"),
        ({"scheme": "gumbel", "seeding": "selfhash"}, "--seeding selfhash: gumbel reads"),
        ({"dual": True}, "--dual: only for --scheme gumbel"),
        ({"scheme": "other"}, "--scheme other"),
        ({"gamma": 1.5}, "--gamma 1.5: a number in (0, 1)"),
        ({"delta": -1.0}, "--delta -1.0: a number in (0, 100]"),
        ({"seeding": "selfhash", "context_width": 1}, "--context 1: an integer from 2"),
    ],
)
def test_bad_settings(settings, message):
    scheme = settings.pop("scheme", "kgw")
    with pytest.raises(ConfigError) as error:
        new_key(scheme, **settings)
    assert str(error.value).startswith(message)


def good_record() -> dict:
    return {
        "format": "retort-watermark-key",
        "version": 1,
        "scheme": "kgw",
        "seeding": "lefthash",
        "context_width": 1,
        "gamma": 0.25,
        "delta": 2.0,
        "secrets": ["ab" * 32],
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json {", "not a watermark key file (not JSON)"),
        ('{"prompt": "hi"}', "not a watermark key file (format is not"),
        (json.dumps({**good_record(), "version": 9}), "key file version 9"),
        (
            json.dumps({k: v for k, v in good_record().items() if k != "secrets"}),
            'key file has no "secrets"',
        ),
        (json.dumps({**good_record(), "secrets": ["abc"]}), '"secrets" must be a list'),
        (json.dumps({**good_record(), "gamma": 2}), "gamma 2: a number in (0, 1)"),
        (json.dumps({**good_record(), "scheme": "rot13"}), "scheme 'rot13'"),
        (json.dumps({**good_record(), "context_width": "one"}), "context_width 'one'"),
    ],
)
def test_files_that_are_not_keys_give_one_line_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as error:
        load_key(path)
    text = str(error.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_missing_key_file(tmp_path):
    with pytest.raises(ConfigError, match="key file not found; make one with retort watermark"):
        load_key(tmp_path / "absent.json")


def test_a_key_made_for_one_tokenizer_refuses_another(tiny_tokenizer, tmp_path):
    from tests.conftest import train_tokenizer

    path = save_key(new_key(tokenizer=tiny_tokenizer), tmp_path / "k.json")
    key = load_key(path)
    check_tokenizer(key, tiny_tokenizer)  # its own: fine
    other = train_tokenizer(vocab_size=280, extra_text="zebra quokka " * 20)
    with pytest.raises(ConfigError, match="key is for another tokenizer"):
        check_tokenizer(key, other)
    check_tokenizer(new_key(), other)  # a key that records none accepts any
