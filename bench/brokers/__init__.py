"""The work-queue candidates of issue 15, measured by ``bench/broker_bench.py``.

One module per broker (``nats_queue``, ``rabbit_queue``, ``pg_queue``), each implementing the
``Broker`` interface of ``common``; ``worker`` is the consumer process they share.
"""
