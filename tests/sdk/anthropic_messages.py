"""The official `anthropic` SDK, unchanged, against a Switchyard router: create, stream, a
tool-use round trip (plain and streamed), count_tokens and the error classes. Prints one JSON
object with what it saw; any assertion failure exits non-zero.

Usage: python anthropic_messages.py BASE_URL API_KEY FAST_MODEL SMART_MODEL
"""
import json
import sys

import anthropic

base, key, fast, smart = sys.argv[1:5]
client = anthropic.Anthropic(base_url=base, api_key=key, max_retries=0)
seen = {}

m = client.messages.create(
    model=smart,
    max_tokens=64,
    system="be brief",
    messages=[{"role": "user", "content": "hello"}],
)
assert m.type == "message" and m.role == "assistant", m
assert m.content and m.content[0].type == "text" and m.content[0].text, m
assert m.stop_reason in ("end_turn", "max_tokens"), m.stop_reason
assert m.usage.input_tokens > 0 and m.usage.output_tokens > 0, m.usage
seen["create"] = {"id": m.id, "model": m.model, "stop_reason": m.stop_reason}

with client.messages.stream(
    model=fast,
    max_tokens=64,
    system=[{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
    messages=[{"role": "user", "content": "hello"}],
) as stream:
    text = "".join(stream.text_stream)
    final = stream.get_final_message()
assert text and final.content[0].text == text, (text, final)
assert final.stop_reason == "end_turn", final.stop_reason
assert final.usage.output_tokens > 0, final.usage
seen["stream"] = {"chars": len(text), "output_tokens": final.usage.output_tokens}

tools = [
    {
        "name": "get_weather",
        "description": "The weather in a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    }
]
question = {"role": "user", "content": "What is the weather in Paris?"}
first = client.messages.create(
    model=smart, max_tokens=200, tools=tools, tool_choice={"type": "any"}, messages=[question]
)
assert first.stop_reason == "tool_use", first
use = next(b for b in first.content if b.type == "tool_use")
assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input, use
second = client.messages.create(
    model=smart,
    max_tokens=200,
    tools=tools,
    tool_choice={"type": "none"},
    messages=[
        question,
        {"role": "assistant", "content": first.content},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny, 21 C"}],
        },
    ],
)
assert second.content[0].type == "text" and second.stop_reason == "end_turn", second
seen["tools"] = {"tool": use.name, "input": use.input}

with client.messages.stream(
    model=fast,
    max_tokens=200,
    tools=tools,
    tool_choice={"type": "tool", "name": "get_weather"},
    messages=[question],
) as stream:
    partial = [e.partial_json for e in stream if e.type == "input_json"]
    final = stream.get_final_message()
streamed = next(b for b in final.content if b.type == "tool_use")
assert final.stop_reason == "tool_use" and "city" in streamed.input, final
assert "".join(partial) and json.loads("".join(partial)) == streamed.input, partial
seen["streamed_tool"] = {"fragments": len(partial), "input": streamed.input}

count = client.messages.count_tokens(model=fast, messages=[question], tools=tools)
assert count.input_tokens > 10, count
seen["count_tokens"] = count.input_tokens

try:
    client.messages.create(model=fast, max_tokens=10, messages=[])
    raise AssertionError("an empty conversation was accepted")
except anthropic.BadRequestError as e:
    assert e.body["error"]["type"] == "invalid_request_error", e.body
try:
    anthropic.Anthropic(base_url=base, api_key="sk-wrong", max_retries=0).messages.create(
        model=fast, max_tokens=10, messages=[question]
    )
    raise AssertionError("a wrong key was accepted")
except anthropic.AuthenticationError as e:
    assert e.body["error"]["type"] == "authentication_error", e.body
seen["errors"] = "ok"

print(json.dumps(seen))
