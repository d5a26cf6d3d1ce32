# %% [markdown]
# # Start here — batch normalization, end to end
#
# This course takes batch normalization apart and puts it back together. You will see the problem it was
# invented for, write it yourself in numpy (forward, backward, inference) and in PyTorch until your layer matches
# `torch.nn.BatchNorm1d/2d` to floating-point precision, test what the papers claim about it in experiments you
# drive with sliders, and learn the mistakes that break it in real training code.
#
# **What you need.** A little calculus, numpy, and basic PyTorch: a multilayer perceptron, SGD and
# backpropagation. Nothing about batch norm. Everything runs on a laptop CPU; nothing is downloaded.
#
# **How it is organised.** Thirteen lectures, each a chapter of 60–90 minutes of reading and exploring, and five
# graded exercises. The lesson map at the bottom of this page lists them, with a link to each.

# %% [markdown]
# ## How to use a lecture
#
# * **Run the cells from top to bottom**, one at a time with Shift+Enter, or all at once with *Run ▸ Run All
#   Cells*. Later cells use what earlier ones computed, so after a change or an error, *Kernel ▸ Restart Kernel
#   and Run All Cells* puts everything back in order. A whole lecture runs in under a minute on a laptop.
# * **Each lecture opens with its learning goals and prerequisites** and ends with a summary and questions to
#   answer for yourself.
# * **The numbers with brackets.** A line such as `largest |difference|: below 1e-14 (< 1e-12)` or
#   `accuracy: 0.931 (> 0.85)` shows a value and, in brackets, the range it must fall in for the lecture's claim
#   to hold. Tiny errors are printed as the next power of ten (`< 1e-10`), so the line reads the same on every
#   machine. A value outside its range says so in capitals: `(OUTSIDE the bracket > 0.85)`. The course's test
#   suite reruns every lecture and compares these lines, so each claim in the text is checked by the code
#   beneath it.
# * **Explorers and dashboards.** Some cells show controls (sliders, menus) above a figure. An explorer
#   recomputes at once as you move a control. A dashboard runs an experiment: every setting of its default grid
#   was computed in advance and appears at once; any other setting says "not precomputed", greys the old figure
#   and offers *Train live*, which trains in the background with a progress bar (*Cancel* stops it). *Pin* keeps
#   a setting to compare with the next ones, *Reset* returns to the lecture's defaults, *Save PNG* and *Save
#   SVG* write the figure to a file. Opened without a running kernel (on GitHub or the course website), a
#   dashboard shows a picture of its default setting instead.

# %% [markdown]
# ## How the exercises work
#
# The exercises are notebooks in the `exercises/` folder (links in the lesson map). Each one lists its goals
# and the lectures to read first.
#
# * **Write your code where it says `# YOUR CODE HERE`** and delete the `raise NotImplementedError()` line
#   under it. Keep the function and class names and signatures as given. Cells with the set-up and the tests are
#   locked: you can run them but not edit them.
# * **Run the test cell under each task.** It prints a ✔ line ending "visible checks passed — hidden checks run
#   when your work is graded", or a short message that says what was expected, what your code returned, and
#   the mistake it most likely makes, with a hint.
# * **How your work is graded.** Your instructor runs the same tests again together with hidden ones (each task
#   says what they cover: other shapes, other settings, float32). The course's grader draws fresh inputs for
#   every grading run, so answers fitted to the inputs you see earn nothing. A test cell earns its points only if
#   every check in it passes. Your code must be your own: the grader blocks importing the course's implementation
#   (`bnlab`), and flags functions that look pasted from it for your instructor.
# * **Studying on your own?** The visible tests tell you whether your code is right. The complete solutions,
#   with the hidden tests, are the notebooks in the `solutions/` folder: open them after you have tried.

# %% [markdown]
# ## The lesson map
#
# Work through the lectures in order: lectures 2–6 build batch norm from scratch, lectures 7–9 test its claims
# in experiments, and lectures 10–13 reproduce the paper's first figure, test the explanations of why it works,
# and take it into practice and onto several devices. Do each exercise after the lectures listed next to it;
# exercises 2–4 build on the ones before them.
#
# <!-- lesson map from README.md: `bnlab build lectures 00` puts here the map kept in README.md (section "The
# course", between its "lesson map" markers), with the links made relative to this folder. Edit the map in
# README.md, not here. -->
