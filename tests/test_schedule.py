from mimir.tutor.schedule import count_loads, order_steps


def test_count_loads_with_one_slot():
    assert count_loads(["a", "b", "a", "b"], resident=()) == 4
    assert count_loads(["a", "a", None, "a"], resident=("a",)) == 0
    assert count_loads(["a", "b", "a"], resident=(), capacity=2) == 2


def test_order_starts_with_resident_and_ends_with_next_model():
    steps = [("tool", "A"), ("routing", "B")]
    # Thinking and response both use A next: doing B first saves a reload of A.
    assert order_steps(steps, resident=(), then=["A", "A"]) == ["routing", "tool"]
    # B is resident from the last turn and the response needs B: start with... B? No:
    # tool(A) must load A anyway, so B, A, then B again costs 2 either way -> keep order.
    assert order_steps(steps, resident=("B",), then=["B"]) == ["tool", "routing"]


def test_model_free_steps_keep_their_order():
    assert order_steps([("tool", None), ("routing", None)], then=["A"]) == ["tool", "routing"]
