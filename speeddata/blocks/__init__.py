"""Processing blocks: a Python function over column batches of one or more channels,
run in its own process (``speeddata block run FILE``), its results a new channel sent
through the relay, so they are cached, drawn and exported like any source's::

    from speeddata.blocks import block

    @block(inputs=["motor"], output="motor_x2", signals={"current2": "A"})
    def double(batch):
        return {"current2": batch["motor"]["current"] * 2}

``declare`` holds the declaration and the output schema, ``join`` the rule that aligns
channels of different rates, ``results`` the checks on what a function returns,
``core`` the batching with no sockets or clock, ``process`` the loop around it."""

from speeddata.blocks.declare import Block, BlockError, OutSignal, block, load_file

__all__ = ["Block", "BlockError", "OutSignal", "block", "load_file"]
