"""Warmup: the accounts of a pool send each other natural mail at a slowly rising daily
volume; the receivers find it wherever it landed, rescue it from Junk, mark it read and
important and reply to some of it; the platform reads the result as inbox placement.

Modules, pure first::

    plan      quota ramp, the day's send times, sender/receiver pairing, reply decisions
    content   natural subjects and bodies from a built-in corpus; message bytes
    imapwire  the few IMAP commands the steps speak, as pure parse/format functions
    imap      a small asyncio IMAP client over imapwire (login, find, move, flag)
    store     PostgreSQL: configs, the pool, warmup_messages (every query tenant-scoped)
    steps     the job handler: outbound, inbound, engagement
    planner   the daemon component and ``warmup tick``: plan what is due, enqueue it
    commands  ``mailgate warmup enable|disable|status|tick``

Errors: :class:`warmup.errors.WarmupError` and its kinds (see that module).
"""
