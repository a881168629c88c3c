"""What ``qkv train --task asr --help`` says was measured (the task's ``measured`` text)."""

MEASURED = (
    "wer and cer are jiwer's word and character error rates (percent of the reference's "
    "words or characters substituted, deleted or inserted; can pass 100), here on the "
    "300 test utterances of 3 espeak-ng voices never heard in training. The default "
    "recipe, --max-time 30m on 2 threads alone (2026-12-07; docs/speech.md): 2,281 "
    "steps; test WER 33.5, CER 14.3 with --beam-size 4 (joint CTC/attention, fused with "
    "the 9-gram of the training transcripts and Ding's other sentences at --lm-weight 0.4; "
    "real-time factor 0.048); 50.3 / 18.1 with 4 beams and no n-gram; 53.0 / 23.3 with one "
    "beam (the default; 54.8 / 21.0 without the n-gram). Decode with --beam-size 4. Three "
    "test utterances (voice: reference | transcript, 4 beams):"
    "\n\nen-gb-x-gbcwmd+f3: it will be unheralded | it will be on a readed"
    "\n\nen-gb-x-gbcwmd+f3: everyone retired early that night | every won retired a let "
    "at night"
    "\n\nen-gb-scotland+klatt2: these street sellers thrive on the naiveness of "
    "tourists | these streat sellers thrive on the need not of tourists"
)
