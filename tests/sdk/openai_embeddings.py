"""The official `openai` SDK, unchanged, against a Switchyard router: embeddings.create with one
text, several texts, token ids, `dimensions`, and both encodings (the SDK asks for base64 by
default and decodes it). Prints one JSON object with what it saw.

Usage: python openai_embeddings.py BASE_URL API_KEY EMBEDDING_MODEL CHAT_MODEL
"""
import json
import math
import sys

import openai

base, key, model, chat = sys.argv[1:5]
client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0)
seen = {}

one = client.embeddings.create(model=model, input="hello")
assert len(one.data) == 1 and len(one.data[0].embedding) > 0, one
assert abs(math.sqrt(sum(x * x for x in one.data[0].embedding)) - 1.0) < 1e-3
assert one.usage.prompt_tokens > 0, one.usage
seen["one"] = {"dims": len(one.data[0].embedding), "tokens": one.usage.prompt_tokens}

floats = client.embeddings.create(model=model, input="hello", encoding_format="float")
assert all(abs(a - b) < 1e-6 for a, b in zip(floats.data[0].embedding, one.data[0].embedding))
seen["float_equals_base64"] = True

many = client.embeddings.create(model=model, input=["a", "b", "a"], dimensions=8)
assert [d.index for d in many.data] == [0, 1, 2], many.data
assert all(len(d.embedding) == 8 for d in many.data)
assert many.data[0].embedding == many.data[2].embedding != many.data[1].embedding
seen["many"] = len(many.data)

tokens = client.embeddings.create(model=model, input=[[1, 2, 3], [4]])
assert len(tokens.data) == 2 and tokens.usage.prompt_tokens == 4, tokens.usage
seen["tokens"] = tokens.usage.prompt_tokens

try:
    client.embeddings.create(model=chat, input="hello")
    raise AssertionError("a chat model served embeddings")
except openai.BadRequestError as e:
    assert "embedding model" in e.message, e.message
seen["errors"] = "ok"

print(json.dumps(seen))
