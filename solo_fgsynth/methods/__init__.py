"""The solo-learn methods of the plugin: ``fgsynth``, ``supervised``, and the peers ``lcr``,
``directpred`` and ``ssole``.

solo-learn is imported here, before any method's module: the plugin registers itself when
``solo`` finishes importing (:func:`solo_fgsynth._solo.register_with_solo`), and registration
imports these modules, so ``solo`` must not be first imported from inside one of them.
"""

import solo  # noqa: F401  (first; see above)
