"""The math of each loss, one module per family, written once: row and
elementwise formulas in the array-API namespace, and the array-API core that
computes a whole loss from them. The public functions are in
:mod:`crossentropy.functional`; nothing here imports a kernel."""
