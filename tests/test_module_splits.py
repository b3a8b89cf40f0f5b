"""Modules split for size keep their import points: every name the code base imports from
``depthpilot.messages``, ``depthpilot.sample_data`` and ``trader.paper`` is still there, and is the very object
defined in the module it moved to (no copy that could drift)."""

from __future__ import annotations

import importlib

import pytest

# every name imported from these modules anywhere in the repository before the splits
BEFORE = {
    "depthpilot.messages": (
        "Message MessageDecodeError BookSnapshot Trade FeatureVector Signal OrderIntent OrderUpdate Fill "
        "PositionUpdate RiskEvent ControlCommand ControlReply Notification ServiceHeartbeat Side encode decode "
        "to_json from_json to_builtins MESSAGE_TYPES MESSAGE_BY_TAG AnyMessage CONTENT_TYPE now_ns new_id "
        "instance_name"
    ).split(),
    "depthpilot.sample_data": (
        "DATASET_NAMES DATASETS DEFAULT_BASE_URL DERIVED MANIFEST Dataset SampleDataError SourceFile files "
        "sha256_file is_present fetch"
    ).split(),
    "trader.paper": "PaperExchange DEPTH_EXHAUSTED".split(),
}
HOMES = {
    "depthpilot.messages": ("depthpilot.message_schemas", "depthpilot.message_codec"),
    "depthpilot.sample_data": ("depthpilot.sample_catalogue",),
    "trader.paper": ("trader.paper_fills",),
}
STAYED = {
    "depthpilot.messages": set(),
    "depthpilot.sample_data": {"sha256_file", "is_present", "fetch"},
    "trader.paper": {"PaperExchange"},
}


@pytest.mark.parametrize("module", sorted(BEFORE))
def test_every_name_is_still_importable_from_where_it_was(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [n for n in BEFORE[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
    assert set(BEFORE[module]) <= set(mod.__all__)


@pytest.mark.parametrize("module", sorted(HOMES))
def test_re_exports_are_the_defining_objects(module: str) -> None:
    mod = importlib.import_module(module)
    homes = [importlib.import_module(h) for h in HOMES[module]]
    for name in BEFORE[module]:
        found = [home for home in homes if name in vars(home)]
        assert bool(found) != (name in STAYED[module]), (name, "moved" if found else "stayed")
        for home in found:
            assert getattr(mod, name) is vars(home)[name], (name, home.__name__)
