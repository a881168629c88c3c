"""What ``qkv train --task vqa --help`` says was measured (the task's ``measured`` text)."""

MEASURED = (
    "exact_match is the share of questions (0-100) whose greedy answer equals the true "
    "answer token for token, over every question of the held-out test scenes; em_what ... "
    "em_relation split it by question kind (the commonest answer of each kind scores 49.6 "
    "overall, 50.0 on exists). LLaVA's recipe, each run alone on 2 threads (2026-12-07; "
    "docs/clip.md): qkv train --task clip --max-time 30m --out runs/clip, then qkv train "
    "--task vqa --vision-from runs/clip --freeze vision --max-time 30m: 3,626 steps; test "
    "exact match 78.7 (what 82.6, where 66.9, count 85.5, exists 74.8, relation 74.8); "
    "with --max-time 60m: 7,230 steps, 85.5 (what 87.5, where 85.2, count 88.5, exists "
    "83.7, relation 80.9), its wrong answers mostly tops the tower confuses (T-shirt, "
    "shirt, pullover, coat). The default tower trained from scratch stops at 55.4 (exists "
    "50.0) in 20 minutes. "
    "Test questions of the run with the CLIP tower (question | truth | answer):"
    "\n\ntest:0: is there a bag? | yes | yes"
    "\n\ntest:0: where is the bag? | bottom right | top right"
    "\n\ntest:1: what is in the top left? | shirt | pullover"
)
