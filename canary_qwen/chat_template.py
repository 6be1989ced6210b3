"""Qwen3 chat format as a Jinja template (stored in tokenizer_config.json)."""

# Text conversations: optional leading system turn, user / assistant / tool turns, reasoning kept
# only on assistant turns after the last user query, and an empty think block after the
# generation prompt when enable_thinking is false.
QWEN3_CHAT_TEMPLATE = r"""{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set state = namespace(last_query=messages|length - 1, searching=true) %}
{%- for m in messages|reverse %}
    {%- set idx = messages|length - 1 - loop.index0 %}
    {%- if state.searching and m.role == 'user' and not (m.content.startswith('<tool_response>') and m.content.endswith('</tool_response>')) %}
        {%- set state.searching = false %}
        {%- set state.last_query = idx %}
    {%- endif %}
{%- endfor %}
{%- for m in messages %}
    {%- if m.role == 'user' or (m.role == 'system' and not loop.first) %}
        {{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' }}
    {%- elif m.role == 'assistant' %}
        {%- set answer = m.content %}
        {%- set reasoning = '' %}
        {%- if m.reasoning_content is defined and m.reasoning_content is not none %}
            {%- set reasoning = m.reasoning_content %}
        {%- elif '</think>' in m.content %}
            {%- set answer = m.content.split('</think>')[-1].lstrip('\n') %}
            {%- set reasoning = m.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
        {%- endif %}
        {%- if loop.index0 > state.last_query and (loop.last or reasoning) %}
            {{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' + answer.lstrip('\n') }}
        {%- else %}
            {{- '<|im_start|>assistant\n' + answer }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif m.role == 'tool' %}
        {%- if loop.first or messages[loop.index0 - 1].role != 'tool' %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' + m.content + '\n</tool_response>' }}
        {%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""
