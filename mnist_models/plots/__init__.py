"""The study's figures, one module per figure family; each plot function takes data and returns a `Figure`.

Families: `images` (the data set's first images), `gradients` (the gradient experiment), `accuracy_curves`
(training), `lr_sweep` (accuracy by learning rate, also across seeds), `per_class` (ROC, F1 and confusion of
one run), `history` (the nightly runs). Figures are built on `matplotlib.figure.Figure` with an Agg canvas
(`canvas.new_figure`) and never touch pyplot's global state, so they can be drawn from several threads at
once. Saving is a separate step: `saving.save_figure` writes one PNG atomically and releases the figure.
"""
