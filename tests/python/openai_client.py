"""The official OpenAI Python client against a castwork node.

Usage: openai_client.py BASE_URL TOKEN CHAT_MODEL EMBEDDING_MODEL
Prints one JSON object with what each call returned; exits non-zero on any error.
"""

import json
import sys

import openai


def main() -> None:
    base_url, token, chat_model, embedding_model = sys.argv[1:5]
    client = openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=120)
    question = [{"role": "user", "content": "What is the capital of France?"}]

    models = [m.id for m in client.models.list()]

    whole = client.chat.completions.create(model=chat_model, messages=question, max_tokens=24, temperature=0)

    chunks = client.chat.completions.create(
        model=chat_model,
        messages=question,
        max_tokens=24,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    streamed, finish, usage = [], None, None
    for chunk in chunks:
        if chunk.choices:
            streamed.append(chunk.choices[0].delta.content or "")
            finish = chunk.choices[0].finish_reason or finish
        if chunk.usage is not None:
            usage = chunk.usage.total_tokens

    vectors = client.embeddings.create(
        model=embedding_model, input=["A man is eating food.", "A man is eating a piece of bread."]
    )
    a, b = (d.embedding for d in vectors.data)
    cosine = sum(x * y for x, y in zip(a, b))

    try:
        client.chat.completions.create(model="no-such-model", messages=question)
        missing = "no error"
    except openai.NotFoundError as err:
        missing = err.body.get("code") if isinstance(err.body, dict) else str(err.body)

    print(json.dumps({
        "models": models,
        "text": whole.choices[0].message.content,
        "finish_reason": whole.choices[0].finish_reason,
        "total_tokens": whole.usage.total_tokens,
        "streamed": "".join(streamed),
        "stream_finish": finish,
        "stream_usage": usage,
        "dimensions": len(a),
        "cosine": cosine,
        "missing_model": missing,
    }))


if __name__ == "__main__":
    main()
