"""The official `openai` SDK, unchanged, against a Switchyard router: the Responses API
(create, stream, a function-call round trip through previous_response_id, retrieve, delete,
structured output) and its error classes. Prints one JSON object with what it saw; any assertion
failure exits non-zero.

Usage: python openai_responses.py BASE_URL API_KEY FAST_MODEL SMART_MODEL
"""
import json
import sys

import openai

base, key, fast, smart = sys.argv[1:5]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
seen = {}

r = client.responses.create(model=smart, instructions="be brief", input="hello")
assert r.object == "response" and r.status == "completed", r
assert r.output_text, r
assert r.usage.input_tokens > 0 and r.usage.output_tokens > 0, r.usage
seen["create"] = {"id": r.id, "chars": len(r.output_text)}

got = client.responses.retrieve(r.id)
assert got.id == r.id and got.output_text == r.output_text, got
seen["retrieve"] = "ok"

with client.responses.stream(model=fast, input="hello") as stream:
    deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
    final = stream.get_final_response()
assert deltas and "".join(deltas) == final.output_text, (deltas, final)
assert final.status == "completed", final
seen["stream"] = {"deltas": len(deltas)}

tools = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    }
]
first = client.responses.create(
    model=smart, input="What is the weather in Paris?", tools=tools, tool_choice="required"
)
calls = [o for o in first.output if o.type == "function_call"]
assert calls and calls[0].name == "get_weather", first.output
args = json.loads(calls[0].arguments)
assert "city" in args, args
second = client.responses.create(
    model=smart,
    previous_response_id=first.id,
    tools=tools,
    tool_choice="none",
    input=[{"type": "function_call_output", "call_id": calls[0].call_id, "output": "sunny, 21 C"}],
)
assert second.output_text and second.previous_response_id == first.id, second
seen["function_call"] = {"call_id": calls[0].call_id, "args": args}

with client.responses.stream(
    model=fast, input="weather in Rome?", tools=tools, tool_choice="required"
) as stream:
    arg_deltas = [e.delta for e in stream if e.type == "response.function_call_arguments.delta"]
    final = stream.get_final_response()
streamed = [o for o in final.output if o.type == "function_call"]
assert streamed and "".join(arg_deltas) == streamed[0].arguments, (arg_deltas, final.output)
seen["streamed_call"] = {"fragments": len(arg_deltas)}

structured = client.responses.create(
    model=fast,
    input="a city",
    text={
        "format": {
            "type": "json_schema",
            "name": "city",
            "schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}},
                "required": ["name"],
                "additionalProperties": False,
            },
            "strict": True,
        }
    },
)
assert "name" in json.loads(structured.output_text), structured.output_text
seen["structured"] = "ok"

deleted = client.responses.delete(r.id)
try:
    client.responses.retrieve(r.id)
    raise AssertionError("a deleted response was found")
except openai.NotFoundError:
    pass
try:
    client.responses.create(model=fast, input="hi", tools=[{"type": "web_search_preview"}])
    raise AssertionError("a built-in tool was accepted")
except openai.BadRequestError as e:
    assert "tools[0].type" in e.message, e.message
try:
    client.responses.create(model=fast, input="hi", previous_response_id="resp_nope")
    raise AssertionError("an unknown previous_response_id was accepted")
except openai.BadRequestError as e:
    assert "previous_response_id" in e.message, e.message
seen["errors"] = "ok"

print(json.dumps(seen))
