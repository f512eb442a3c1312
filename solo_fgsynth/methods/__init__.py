"""The solo-learn methods of the plugin: ``fgsynth`` and ``supervised``.

solo-learn is imported here, before either method's module: the plugin registers itself when
``solo`` finishes importing (:func:`solo_fgsynth._solo.register_with_solo`), and registration
imports these modules, so ``solo`` must not be first imported from inside one of them.
"""

import solo  # noqa: F401  (first; see above)
