"""The built-in training tasks, one module each (each registers itself with
:func:`audiokit.train.task.register_task`)."""
