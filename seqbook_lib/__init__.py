"""seqbook_lib: the code of the seqbook course text, written once.

One concept per module; the chapters import these and show their source.

- :mod:`seqbook_lib.cells` -- RNN, LSTM and GRU cells: one time step.
- :mod:`seqbook_lib.rnn` -- the cells unrolled over time: stacked,
  bidirectional, with per-sequence ``lengths``.
- :mod:`seqbook_lib.attention` -- scaled dot-product, multi-head and additive
  attention; causal and padding masks.
- :mod:`seqbook_lib.transformer` -- sinusoidal positional encoding, the
  layers' shared submodules, an encoder layer, a stack of layers and a small
  encoder classifier.
- :mod:`seqbook_lib.seq2seq` -- encoder, attentive decoder, teacher forcing,
  greedy and beam-search decoding.
- :mod:`seqbook_lib.encoder_decoder` -- the Transformer encoder-decoder: a
  decoder layer, the stacks, and a translation model that decodes with
  :mod:`seqbook_lib.seq2seq`'s greedy and beam search.
- :mod:`seqbook_lib.causal_lm` -- a decoder-only (GPT-style) Transformer
  language model: rotary positions, a KV cache, generation.
- :mod:`seqbook_lib.scan` -- parallel (associative) scans and the linear
  recurrence h_t = a_t h_{t-1} + b_t, against the plain loop.
- :mod:`seqbook_lib.minrnn` -- minGRU and minLSTM, sequential and parallel.
- :mod:`seqbook_lib.linear_attention` -- linear attention in its parallel,
  chunked and recurrent forms.
- :mod:`seqbook_lib.ssm` -- a selective state-space layer (S6) and a Mamba
  block, sequential and scan forms.
- :mod:`seqbook_lib.mixers` -- one residual model whose sequence layer is
  swapped (LSTM, GRU, minGRU, linear attention, SSM, softmax attention).
- :mod:`seqbook_lib.warmup` -- the inverse-square-root warm-up schedule of
  the original Transformer.
- :mod:`seqbook_lib.pooling` -- masked mean and max over valid time steps.
- :mod:`seqbook_lib.sentiment` -- review classifiers (bag of words, BiLSTM),
  their training loop and predictions.
- :mod:`seqbook_lib.charlm` -- a character-level language model: truncated
  BPTT, scoring in nats, sampling with temperature and top-k.
- :mod:`seqbook_lib.schedule` -- linear warm-up and cosine decay of the
  learning rate.
- :mod:`seqbook_lib.checkpoint` -- saving a trained model with its
  vocabulary, and loading it back.
- :mod:`seqbook_lib.manual` -- NumPy step-by-step traces for computations by
  hand.
- :mod:`seqbook_lib.tasks` -- synthetic sequence tasks with a tunable
  difficulty.
- :mod:`seqbook_lib.dates` -- generated written dates and their ISO forms.
- :mod:`seqbook_lib.text` -- tokenizer, vocabulary, padding, length batches.
- :mod:`seqbook_lib.data` -- loaders of the IMDB reviews and tiny Shakespeare.
- :mod:`seqbook_lib.utils` -- seeding and device selection.
- :mod:`seqbook_lib.testing` -- comparing a module with its ``torch.nn``
  counterpart: outputs, input and parameter gradients.
- :mod:`seqbook_lib.stats` -- summaries over seeds (mean and range), when two
  ranges separate, McNemar's exact test for paired predictions.
- :mod:`seqbook_lib.sweeps` -- runs over seeds and settings stored once in a
  JSON file; a chapter reruns a few of them live and checks the rest.

Every module that has a ``torch.nn`` counterpart takes the same arguments,
has the same parameter names and shapes and computes the same numbers.
"""

__version__ = "0.1.0"
