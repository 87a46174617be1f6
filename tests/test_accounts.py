"""Users, roles, API keys, web sign-ins, the audit log and the accounts migration, with real
argon2 hashes, on both engines (a SQLite file, a real PostgreSQL server)."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from mimir.auth.credentials import check_name, check_password, parse_api_key
from mimir.auth.roles import LOCAL_ADMIN, Principal, require
from mimir.auth.throttle import FREE_ADDRESS_FAILURES, FREE_FAILURES, LoginThrottle
from mimir.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    TooManyAttemptsError,
)
from mimir.storage.accounts import AccountStore
from mimir.storage.audit import AuditLog
from mimir.storage.conversations import ConversationStore
from mimir.storage.db import Database
from mimir.storage.migrations import MIGRATIONS

PASSWORD = "correct horse battery"


@pytest.fixture
def db(db_target):
    """Accounts on both engines: a SQLite file and a real PostgreSQL database."""
    with Database.open(db_target) as database:
        yield database


@pytest.fixture
def accounts(db):
    return AccountStore(db)


def test_users_are_stored_with_argon2_hashes_never_the_password(accounts, db):
    accounts.add_user("ada", "admin", PASSWORD)
    accounts.add_user("sam", "student", "another password")
    assert [(u.name, u.role) for u in accounts.list_users()] == [("ada", "admin"), ("sam", "student")]
    stored = db.read("SELECT password_hash FROM users WHERE name = 'ada'")[0]["password_hash"]
    assert stored.startswith("$argon2id$") and PASSWORD not in stored
    assert accounts.authenticate("ada", PASSWORD).role == "admin"


def test_wrong_password_and_unknown_user_get_the_same_answer(accounts):
    accounts.add_user("ada", "admin", PASSWORD)
    with pytest.raises(AuthenticationError) as wrong:
        accounts.authenticate("ada", "not the password")
    with pytest.raises(AuthenticationError) as unknown:
        accounts.authenticate("nobody", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == "wrong user name or password"


@pytest.mark.parametrize(
    ("name", "fragment"),
    [("", "empty"), ("   ", "empty"), ("a" * 65, "too long"), ("bad\x00name", "control"), ("tab\tname", "control"),
     ("semi;colon", "only letters"), ("two words", "only letters")],
)
def test_bad_names_get_a_clear_error(accounts, name, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        accounts.add_user(name, "student", PASSWORD)
    assert accounts.list_users() == []


@pytest.mark.parametrize(
    ("password", "fragment"),
    [("", "empty"), ("short", "too short"), ("x" * 1025, "too long"), ("new\nline pass", "control"),
     ("nul\x00char pass", "control")],
)
def test_bad_passwords_get_a_clear_error(accounts, password, fragment):
    with pytest.raises(InvalidInputError, match=fragment):
        accounts.add_user("ada", "admin", password)
    assert accounts.list_users() == []


def test_unicode_names_and_passwords_are_fine():
    assert check_name("zoë.o'neil".replace("'", "")) == "zoë.oneil"
    assert check_password("pässwörd ünïcode")


def test_duplicate_name_and_unknown_role_are_refused(accounts):
    accounts.add_user("ada", "admin", PASSWORD)
    with pytest.raises(InvalidInputError, match="already exists"):
        accounts.add_user("ada", "student", PASSWORD)
    with pytest.raises(InvalidInputError, match="unknown role 'owner'"):
        accounts.add_user("bob", "owner", PASSWORD)


def test_the_last_admin_cannot_be_removed(accounts):
    accounts.add_user("ada", "admin", PASSWORD)
    accounts.add_user("sam", "student", PASSWORD)
    with pytest.raises(InvalidInputError, match="last admin"):
        accounts.remove_user("ada")
    accounts.add_user("bea", "admin", PASSWORD)
    accounts.remove_user("ada")
    assert [u.name for u in accounts.list_users()] == ["bea", "sam"]
    with pytest.raises(NotFoundError):
        accounts.remove_user("ada")


def test_password_change_ends_web_sign_ins(accounts):
    user = accounts.add_user("sam", "student", PASSWORD)
    token = accounts.start_login(user)
    assert accounts.user_for_login(token).name == "sam"
    accounts.set_password("sam", "a brand new one")
    assert accounts.user_for_login(token) is None
    with pytest.raises(AuthenticationError):
        accounts.authenticate("sam", PASSWORD)
    assert accounts.authenticate("sam", "a brand new one").name == "sam"


def test_sign_in_tokens_are_stored_as_digests_and_expire(accounts, db):
    user = accounts.add_user("sam", "student", PASSWORD)
    token = accounts.start_login(user)
    assert token not in json.dumps([dict(r) for r in db.read("SELECT * FROM web_logins")])
    accounts.end_login(token)
    assert accounts.user_for_login(token) is None
    expired = accounts.start_login(user, lifetime_s=-1)
    assert accounts.user_for_login(expired) is None
    assert accounts.user_for_login("forged-token-forged-token-forged") is None


def test_api_keys_are_shown_once_stored_as_digests_and_revocable(accounts, db):
    accounts.add_user("sam", "student", PASSWORD)
    info, key = accounts.create_key("sam")
    assert key.startswith(f"mimir-{info.id}-") and "\n" not in key
    assert key.rsplit("-", 1)[1] not in json.dumps([dict(r) for r in db.read("SELECT * FROM api_keys")])
    assert accounts.user_for_key(key).name == "sam"
    # the right id with a wrong secret, garbage, and an empty key are all the same refusal
    key_id, _ = parse_api_key(key)
    forged = f"mimir-{key_id}-{'A' * 43}"
    for bad in (forged, "sk-garbage", "", "mimir-" + "x" * 500):
        with pytest.raises(AuthenticationError, match="missing or invalid API key"):
            accounts.user_for_key(bad)
    accounts.revoke_key(info.id)
    assert not accounts.list_keys()[0].active
    with pytest.raises(AuthenticationError):
        accounts.user_for_key(key)


def test_removing_a_user_removes_their_keys_and_sign_ins_but_keeps_sessions(accounts, db):
    accounts.add_user("ada", "admin", PASSWORD)
    sam = accounts.add_user("sam", "student", PASSWORD)
    _, key = accounts.create_key("sam")
    token = accounts.start_login(sam)
    session = ConversationStore(db).create_session(owner_id=sam.id)
    accounts.remove_user("sam")
    with pytest.raises(AuthenticationError):
        accounts.user_for_key(key)
    assert accounts.user_for_login(token) is None
    assert accounts.list_keys() == []
    assert ConversationStore(db).get_session(session).owner_id == sam.id


def test_roles_allow_what_the_table_says():
    student = Principal("u-1", "sam", "student")
    teacher = Principal("u-2", "tess", "teacher")
    assert require(student, "chat") is student
    for action in ("read_all_sessions", "read_all_memory", "prune_cache", "unload_model", "view_cache"):
        with pytest.raises(PermissionDeniedError):
            require(student, action)
    assert require(teacher, "read_all_sessions") and require(teacher, "read_all_memory")
    with pytest.raises(PermissionDeniedError, match="pruning the model cache needs the admin role"):
        require(teacher, "prune_cache")
    assert require(LOCAL_ADMIN, "prune_cache") and require(LOCAL_ADMIN, "unload_model")
    with pytest.raises(AuthenticationError):
        require(None, "chat")


def test_sessions_of_other_users_look_like_missing_ones(db):
    store = ConversationStore(db)
    mine = store.create_session(owner_id="u-sam")
    theirs = store.create_session(owner_id="u-kim")
    assert store.get_session(mine, owner="u-sam").id == mine
    with pytest.raises(NotFoundError) as foreign:
        store.get_session(theirs, owner="u-sam")
    with pytest.raises(NotFoundError) as missing:
        store.get_session("s-doesnotexist", owner="u-sam")
    assert str(foreign.value).replace(theirs, "ID") == str(missing.value).replace("s-doesnotexist", "ID")
    assert [s.id for s in store.list_sessions(owner="u-sam")] == [mine]
    assert {s.id for s in store.list_sessions()} == {mine, theirs}


def test_audit_log_records_who_what_when(db):
    log = AuditLog(db)
    before = time.time()
    log.record("ada", "cache.prune", "/hf/hub", {"freed_bytes": 10}, address="10.0.0.5")
    log.record("cli:root", "user.add", "sam", {"role": "student", "url": "https://u:secret@host/v1"})
    entries = log.entries()
    assert [(e.actor, e.action, e.target) for e in entries] == [("ada", "cache.prune", "/hf/hub"),
                                                                ("cli:root", "user.add", "sam")]
    assert entries[0].at >= before and entries[0].address == "10.0.0.5" and entries[0].detail == {"freed_bytes": 10}
    assert "secret" not in json.dumps([dict(r) for r in db.read("SELECT * FROM audit_log")])
    assert [e.action for e in log.entries(action="user.add")] == ["user.add"]


def test_throttle_slows_repeated_failures_per_address_and_per_user():
    now = [1000.0]
    throttle = LoginThrottle(clock=lambda: now[0])
    for _ in range(FREE_FAILURES):
        throttle.check("10.0.0.1", "sam")
        throttle.failed("10.0.0.1", "sam")
    with pytest.raises(TooManyAttemptsError) as info:
        throttle.check("10.0.0.1", "sam")
    assert info.value.retry_after_s >= 1
    # the same user from another address waits too; classmates behind the same address do not (yet)
    with pytest.raises(TooManyAttemptsError):
        throttle.check("10.9.9.9", "sam")
    throttle.check("10.0.0.1", "kim")
    for i in range(FREE_ADDRESS_FAILURES - FREE_FAILURES):  # guessing many names from one address
        throttle.failed("10.0.0.1", f"name{i}")
    with pytest.raises(TooManyAttemptsError):
        throttle.check("10.0.0.1", "kim")
    throttle.check("10.9.9.9", "kim")
    now[0] += 1.5
    throttle.check("10.0.0.1", "sam")  # the wait has passed
    throttle.failed("10.0.0.1", "sam")
    now[0] += 1.5
    with pytest.raises(TooManyAttemptsError):  # the next wait doubled
        throttle.check("10.0.0.1", "sam")
    throttle.succeeded("10.0.0.1", "sam")
    throttle.check("10.0.0.1", "sam")


# -- the migration on a database from before accounts ------------------------------------


def _old_database(path):
    """A database as Mimir wrote it before accounts existed: the migrations of that time,
    and rows written through their schema."""
    old = [(name, fn) for name, fn in MIGRATIONS if name in ("m001_telemetry_steps", "m002_conversations")]
    with Database.open(path, migrations=old) as db, db.write() as conn:
        conn.execute("INSERT INTO sessions (id, title, created_at, updated_at) VALUES ('s-old', 'Fractions', 1, 2)")
        conn.execute(
            "INSERT INTO turns (id, session_id, seq, created_at, user_message, response, status, flags_json) "
            "VALUES ('t-old', 's-old', 1, 2, 'What is a half?', 'One of two equal parts.', 'ok', '[]')"
        )
        conn.execute(
            "INSERT INTO telemetry_turns (session_id, turn_id, started_at, wall_s, step_count) "
            "VALUES ('s-old', 't-old', 2, 0.5, 1)"
        )
        conn.execute(
            "INSERT INTO telemetry_steps (step_id, session_id, turn_id, seq, name, started_at, wall_s) "
            "VALUES ('st-old', 's-old', 't-old', 0, 'response', 2, 0.5)"
        )


def test_a_database_from_before_accounts_upgrades_with_nothing_lost(tmp_path):
    path = tmp_path / "mimir.db"
    _old_database(path)
    with sqlite3.connect(path) as raw:
        assert "users" not in {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
    with Database.open(path) as db:
        assert db.applied_migrations() == [name for name, _ in MIGRATIONS]
        store = ConversationStore(db)
        old = store.get_session("s-old", owner=None)  # owned by the local user of auth = "none"
        assert (old.title, old.turn_count, old.owner_id) == ("Fractions", 1, None)
        assert store.turns("s-old")[0].response == "One of two equal parts."
        from mimir.storage.telemetry_store import TelemetryStore

        assert [t.turn_id for t in TelemetryStore(db).turns(owner=None)] == ["t-old"]
        accounts = AccountStore(db)
        accounts.add_user("ada", "admin", PASSWORD)
        assert accounts.count_users() == 1
    with Database.open(path) as db:  # opening again changes nothing
        assert ConversationStore(db).get_session("s-old").turn_count == 1
        assert AccountStore(db).count_users() == 1
