"""Everything that runs a network: one class per backend behind the :class:`engines.base.Engine` protocol."""
