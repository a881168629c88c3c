"""What ``qkv train --task asr --help`` says was measured (the task's ``measured`` text)."""

MEASURED = (
    "wer and cer are jiwer's word and character error rates (percent of the reference's "
    "words or characters substituted, deleted or inserted; can pass 100), here on the "
    "300 test utterances of 3 espeak-ng voices never heard in training. The default "
    "recipe, --max-time 30m on 2 threads alone (2026-12-08; docs/speech.md): 2,888 "
    "steps; qkv eval (8 beams for asr: joint CTC/attention, fused with the 9-gram of the "
    "training transcripts and Ding's other sentences at --lm-weight 0.4): test WER 20.7, "
    "CER 8.4, real-time factor 0.057; 19.6 / 8.3 with --oov-penalty 4 (the lexicon); "
    "21.5 / 8.5 with --beam-size 4; 37.2 / 14.1 with one beam. With dropout 0.1 (the "
    "recipe until 2026-12-08) the same decoding gave 30.5 / 13.3. Three test utterances "
    "(reference | transcript, 8 beams, --oov-penalty 4):"
    "\n\nit will be unheralded | it will be on are dead"
    "\n\nthe terrain dips down to the bridge | the terrain dips down to the bridge"
    "\n\ndon't just jump to conclusions | don't just jump to conclusions"
)
