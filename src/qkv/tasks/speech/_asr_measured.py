"""What ``qkv train --task asr --help`` says was measured (the task's ``measured`` text)."""

MEASURED = (
    "wer and cer are jiwer's word and character error rates (percent of the reference's "
    "words or characters substituted, deleted or inserted; can pass 100), here on the "
    "300 test utterances of 3 espeak-ng voices never heard in training. The default "
    "recipe, --max-time 30m on 2 threads alone (2026-12-07; docs/speech.md): 2,281 "
    "steps; test WER 50.3, CER 18.1 with --beam-size 4 (joint CTC/attention), 54.8 / "
    "21.0 with one beam, 54.8 / 26.2 with the attention decoder alone; real-time factor "
    "0.024 with 4 beams. Three test utterances (voice: reference | transcript, 4 beams):"
    "\n\nen-gb-x-gbcwmd+f3: it will be unheralded | it will be on a readed"
    "\n\nen-gb-x-gbcwmd+f3: everyone retired early that night | hevery won retired a "
    "lith at night"
    "\n\nen-gb-scotland+klatt2: these street sellers thrive on the naiveness of "
    "tourists | these strite sel as thrive on the niem no sof to rests"
)
