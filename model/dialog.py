"""Dialogs as training sequences in the Llama 3 chat format (paper section 4.1), with the loss mask.

A dialog is encoded piece by piece, exactly as Tokenizer.encode_chat lays it out:

    <|begin_of_text|>  then per message  <|start_header_id|>role<|end_header_id|>\\n\\n  content  <|eot_id|>

so every token's origin is known from where it was appended; a rendered string is never re-tokenised. The SFT
loss mask is True on the assistant content tokens and on the <|eot_id|> that closes each trained assistant turn
(the model learns to stop), False on <|begin_of_text|>, headers and system/user content.

`format_token_mask` marks the formatting tokens (begin of text, headers with their role names and the blank line
after them, end-of-turn/message/text): DPO leaves them out of both the chosen and the rejected log-probs
(section 4.1.4), since the two responses share them and their gradients would fight.
"""

from __future__ import annotations

from collections.abc import Sequence

ROLES = ("system", "user", "assistant")
TRAIN_ON = ("all_assistant", "last_assistant")


def check_dialog(messages: Sequence[dict]) -> None:
    """A ValueError naming the message index and the problem, for anything encode_dialog cannot train on."""
    if not messages:
        raise ValueError("dialog has no messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"message {i}: must be a dict with 'role' and 'content', got {m!r:.80}")
        role, content = m["role"], m["content"]
        if role not in ROLES:
            raise ValueError(f"message {i}: unknown role {role!r} (known: {', '.join(ROLES)})")
        if not isinstance(content, str):
            raise ValueError(f"message {i}: content must be str, got {type(content).__name__}")
        if role == "system" and i != 0:
            raise ValueError(f"message {i}: a system message must be the first message")
        if role == "assistant" and not content.strip():
            raise ValueError(f"message {i}: empty assistant content")
    if messages[-1]["role"] != "assistant":
        last = len(messages) - 1
        raise ValueError(
            f"message {last}: a training dialog must end with an assistant turn, not {messages[-1]['role']!r}"
        )


def encode_dialog(tok, messages: Sequence[dict], train_on: str = "all_assistant") -> tuple[list[int], list[bool]]:
    """(ids, loss_mask) of one dialog; ids equal tok.encode_chat(messages, add_generation_prompt=False).

    train_on: "all_assistant" trains every assistant turn, "last_assistant" only the final one (earlier turns
    are then context, e.g. when they came from an older model)."""
    if train_on not in TRAIN_ON:
        raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
    check_dialog(messages)
    last = len(messages) - 1
    ids, mask = [tok.bos_id], [False]
    for i, m in enumerate(messages):
        header, content = tok.encode_header(m["role"]), tok.encode(m["content"])
        trained = m["role"] == "assistant" and (train_on == "all_assistant" or i == last)
        ids += header + content + [tok.eot_id]
        mask += [False] * len(header) + [trained] * (len(content) + 1)  # content and its <|eot_id|>
    return ids, mask


def format_token_mask(ids: Sequence[int], tok) -> list[bool]:
    """True on formatting tokens: <|begin_of_text|>, <|start_header_id|> role <|end_header_id|> and the "\\n\\n"
    the header ends with, and the stop tokens (<|eot_id|>, <|eom_id|>, <|end_of_text|>)."""
    start, end = tok.special_tokens["<|start_header_id|>"], tok.special_tokens["<|end_header_id|>"]
    blank = tok.encode("\n\n")  # what encode_header appends after <|end_header_id|>
    stops = set(tok.stop_tokens) | {tok.bos_id}
    out = [False] * len(ids)
    in_header = False
    i = 0
    while i < len(ids):
        t = ids[i]
        if t == start:
            in_header = True
        if in_header or t in stops:
            out[i] = True
        if t == end and in_header:
            in_header = False
            if list(ids[i + 1 : i + 1 + len(blank)]) == blank:
                out[i + 1 : i + 1 + len(blank)] = [True] * len(blank)
                i += len(blank)
        i += 1
    return out
