"""The KV channel: the sender's keys and values over its context, mapped layer by layer into the receiver's
space and placed in the receiver's attention cache before its own prompt (as KVComm and Cache-to-Cache move
information between models), scored under the controls and statistics of the residual channel.

* :mod:`~actbridge.kv.layout`: which cache layouts the channel supports, and rotary embeddings undone and redone;
* :mod:`~actbridge.kv.segments`: each prompt cut into the shared head, the sender's context and the receiver's tail;
* :mod:`~actbridge.kv.entries`: a model's pre-rotary keys and values over token sequences;
* :mod:`~actbridge.kv.maps`: the registered map kinds (``identity``, ``ridge``), fitted per layer pair;
* :mod:`~actbridge.kv.conditions`: the registered conditions of the channel (its controls and upper bound);
* :mod:`~actbridge.kv.channel`: the eval job, scoring every condition of every example.
"""
