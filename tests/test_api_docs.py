"""The ``/edit`` endpoint documents itself: its description, every parameter and every output named, in Gradio's
API page (``view_api``) and in the MCP tool Gradio makes of it (``--mcp``), from the settings' one description."""

from __future__ import annotations

import gradio.mcp
import httpx
import pytest
from gradio_client import Client

import rnri.editor as ed


@pytest.fixture(scope="module")
def endpoint(url):
    return Client(url, verbose=False).view_api(print_info=False, return_format="dict")["named_endpoints"]["/edit"]


def test_view_api_shows_a_description_and_names_every_output(endpoint):
    assert endpoint["description"].startswith("Edit a photo by describing it")
    labels = [r["label"] for r in endpoint["returns"]]
    assert labels[:3] == ["Edited", "Reconstruction (source prompt)", "Summary"]
    assert not [label for label in labels if label.startswith("value_")]
    assert [p["parameter_name"] for p in endpoint["parameters"]][:3] == ["photo", "source", "target"]


def described(schema: dict) -> dict[str, str]:
    return {name: prop.get("description", "") for name, prop in schema["properties"].items()}


def test_the_mcp_tool_describes_every_parameter_offline(app, endpoint):
    server = gradio.mcp.GradioMCPServer(app.demo)
    assert list(server.tool_to_endpoint.items()) == [("edit", "/edit")]
    block_fn = next(fn for fn in app.demo.fns.values() if fn.api_name == "edit")
    description, parameters = server.get_fn_description(block_fn, "edit")
    schema, _ = server.get_input_schema("edit", parameters)
    found = described(schema)
    assert description.startswith("Edit a photo by describing it") and "Returns:" in description
    assert set(found) == {p["parameter_name"] for p in endpoint["parameters"]}
    assert all(len(text) > 20 for text in found.values()), found
    offered = ed.controls(
        app.demo.rnri_listeners and app.Handlers.__init__ and block_fn.fn.__wrapped__.__self__.editor.pipe
    )
    for name, setting in offered.items():  # each setting as its one description says
        assert found[name] == ed.explain_option(setting)
    assert "from 0 to 15" in found["guidance_scale"]
    assert "one of ddim, quasi-newton, rnri, gnri, fixed-point" in found["method"]


def test_mcp_is_off_by_default_and_served_with_the_flag(app, pipe, monkeypatch):
    monkeypatch.delenv("RNRI_MCP", raising=False)
    monkeypatch.delenv("GRADIO_MCP_SERVER", raising=False)
    assert app.parse_args([]).mcp is False and app.parse_args(["--mcp"]).mcp is True
    monkeypatch.setenv("RNRI_MCP", "1")
    assert app.parse_args([]).mcp is True
    demo = app.build_demo(app.Handlers(ed.Editor(pipe)), ed.Resident(pipe, "tiny", "tiny"))
    url = app.launch(demo, "127.0.0.1", None, block=False, mcp_server=True)
    try:
        tools = httpx.get(url + "gradio_api/mcp/schema").json()
        (tool,) = [t for t in tools if t["name"] == "edit"]
        assert all(prop.get("description") for prop in tool["inputSchema"]["properties"].values())
    finally:
        demo.close()
