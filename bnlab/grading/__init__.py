"""bnlab.grading: exercise checks with targeted feedback, and the tools to hand out and grade exercises.

Modules
-------
checks         what exercise test cells call: ``checks.forward(batchnorm_forward)`` prints a success line or
               raises AssertionError naming the likely mistake
core           the Check protocol (inputs / probe / judge), safe calls into submitted code, comparisons
diagnoses      the classic mistakes: what each computes and how to explain it
numpy_checks, layer_checks, torch_checks, answer_checks
               the checks of exercises 1-4 and of hand-entered answers
practice_checks
               the checks of exercise 5: lecture 12's slips in a training script (a network trained by the
               grader, every slip still present named) and lecture 13's synchronized statistics
layer_script   scripted train/eval/forward/backward sequences played on learner and reference layers
wire           the JSON format in which results leave a submission's process
notebooks      reading exercise notebooks: nbgrader metadata, cell roles, test calls, validation
authoring      building the masters in solutions/ from their percent-format sources
assign         masters (solutions/) -> student notebooks (exercises/)
sandbox, child the grader's side and the submission's side of one sandboxed run
grade          grading submissions (one, or a class in parallel) into results
export         grades.csv, per-submission feedback JSON, Gradescope results.json
gradescope     the Gradescope autograder zip and its runner

Keep this package's import light: the sandboxed child imports it before any submission code runs.
"""
