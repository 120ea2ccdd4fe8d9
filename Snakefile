# pixelrobust: entry point. The workflow lives in workflow/Snakefile.
include: "workflow/Snakefile"


# An include restores the previous default target, so name it here: a bare `snakemake` builds `all`.
workflow.default_target = "all"
