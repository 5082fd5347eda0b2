"""The operator layer: one module per operator family.

Each public function checks its call once into a problem (fastconv._plan.problems), asks the
dispatcher for one plan (fastconv._plan.dispatch), allocates its output and runs the planned
kernel (fastconv._kernels). No arithmetic lives here; no kernel validates.
"""
