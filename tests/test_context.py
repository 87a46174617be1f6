import pytest

from mimir.errors import ContextOverflowError
from mimir.models.base import ChatMessage
from mimir.models.context import TRUNCATION_NOTICE, fit_messages


def count(m: ChatMessage) -> int:
    return len(m.content.split()) + 1


def words(n: int) -> str:
    return " ".join(f"w{i}" for i in range(n))


def test_fits_unchanged():
    msgs = [ChatMessage("system", "be kind"), ChatMessage("user", "hi")]
    out = fit_messages(msgs, context_length=100, reserve_tokens=10, count=count, model_id="m")
    assert out.messages == msgs and out.dropped == 0 and not out.truncated


def test_drops_oldest_history_but_keeps_system_and_last():
    msgs = [
        ChatMessage("system", "sys"),
        ChatMessage("user", words(30)),
        ChatMessage("assistant", words(30)),
        ChatMessage("user", "now"),
    ]
    out = fit_messages(msgs, context_length=80, reserve_tokens=20, count=count, model_id="m")
    assert [m.role for m in out.messages] == ["system", "assistant", "user"]
    assert out.dropped == 1 and out.tokens <= 60


def test_truncates_a_single_huge_message_with_notice():
    msgs = [ChatMessage("system", "sys"), ChatMessage("user", words(500))]
    out = fit_messages(
        msgs,
        context_length=100,
        reserve_tokens=20,
        count=count,
        model_id="m",
        truncate_text=lambda t, n: " ".join(t.split()[:n]),
    )
    assert out.truncated
    assert out.messages[-1].content.endswith(TRUNCATION_NOTICE)
    assert out.tokens <= 80


def test_error_policy_refuses():
    msgs = [ChatMessage("user", words(500))]
    with pytest.raises(ContextOverflowError) as info:
        fit_messages(msgs, context_length=100, reserve_tokens=20, count=count, model_id="m", overflow="error")
    assert info.value.context_length == 100
