package org.mobilepeft.core

/**
 * One decoded image: [height] x [width] x [channels] (1 grey or 3 RGB) values in 0..1, row-major
 * HWC. Decoding files is the platform's job (Android: `BitmapFactory`); the core starts here.
 */
class Image private constructor(val height: Int, val width: Int, val channels: Int, val values: FloatArray) {
    companion object {
        /** uint8 pixels 0..255 (Python: `astype(float32) / 255`). */
        fun fromBytes(height: Int, width: Int, channels: Int, pixels: ByteArray): Image {
            check(height, width, channels, pixels.size)
            return Image(height, width, channels, FloatArray(pixels.size) { (pixels[it].toInt() and 0xFF).toFloat() / 255f })
        }

        /** Float pixels 0..1; values may overshoot by rounding (1e-3), never by scale. */
        fun fromFloats(height: Int, width: Int, channels: Int, values: FloatArray): Image {
            check(height, width, channels, values.size)
            val lo = values.minOrNull() ?: 0f
            val hi = values.maxOrNull() ?: 0f
            if (lo < -FLOAT_SLACK || hi > 1 + FLOAT_SLACK || !lo.isFinite() || !hi.isFinite() || values.any { it.isNaN() }) {
                throw DataError("float image has values in [${Py.floatRepr(lo.toDouble())}, ${Py.floatRepr(hi.toDouble())}]; expected 0..1. " +
                    "Scale it first (uint8 images are divided by 255 automatically).")
            }
            return Image(height, width, channels, FloatArray(values.size) { values[it].coerceIn(0f, 1f) })
        }

        private const val FLOAT_SLACK = 1e-3f

        private fun check(h: Int, w: Int, c: Int, n: Int) {
            if (h <= 0 || w <= 0 || (c != 1 && c != 3) || n != h * w * c) {
                throw DataError("image has shape [$h, $w, $c] with $n values; expected [H, W] grey or [H, W, 3] RGB. " +
                    "Convert RGBA or palette images to RGB first.")
            }
        }
    }
}

/** Fixed-shape inputs of one step, row-major, batch first. */
class Batch(
    val pixelValues: FloatArray, // [B, 3, S, S]
    val inputIds: LongArray, // [B, T]
    val labels: LongArray, // [B, T]
    val batchSize: Int,
    val imageSize: Int,
    val textLen: Int,
) {
    val pixelShape: LongArray get() = longArrayOf(batchSize.toLong(), 3, imageSize.toLong(), imageSize.toLong())
    val textShape: LongArray get() = longArrayOf(batchSize.toLong(), textLen.toLong())
}

/** One encoded example: pixel_values `[3, S, S]`, input_ids and labels `[T]`. */
class Encoded(val pixels: FloatArray, val inputIds: LongArray, val labels: LongArray)

/**
 * mobile_peft/core/encode.py on the phone: image and text to the fixed-shape arrays of a bundle's
 * input spec, bit for bit (the golden fixtures in tests/demo_apps/fixtures prove it).
 *
 *     image  -> bilinear resize to [S, S] (align_corners=False, no antialias, float32 steps as
 *               numpy's) -> grey to 3 channels -> (x - mean) / std        pixel_values [3, S, S]
 *     text   input_ids: <bos> tok(prompt_template.format(question=q)) tok(answer) <eos> <pad>...
 *            labels:    IGNORE ...                                    tok(answer) <eos> IGNORE ...
 */
class Encoder(val inputs: BundleInputSpec, val tokenizer: WordLevelTokenizer) {
    val spec: InputSpec = inputs.spec
    val ids: TokenIds = inputs.tokenIds
    val batchSize: Int = inputs.batchSize

    fun image(image: Image): FloatArray = encodeImage(image, spec)

    private fun lower(text: String): String = if (spec.lowercase) text.lowercase() else text

    private fun promptIds(question: String): IntArray = tokenizer.encode(formatPrompt(spec.promptTemplate, lower(question)))

    /** `(input_ids, labels)`, both `[max_text_len]`; [source] (`"file:line"`) is named in the errors. */
    fun text(question: String, answer: String, source: String = ""): Pair<LongArray, LongArray> {
        val where = if (source.isNotEmpty()) "$source: " else ""
        val prompt = promptIds(question)
        val answerIds = tokenizer.encode(lower(answer))
        if (answerIds.isEmpty()) {
            throw DataError("${where}answer ${Py.repr(answer)} (question ${Py.repr(question)}) encodes to no tokens; give a non-empty answer.")
        }
        val seq = intArrayOf(ids.bos) + prompt + answerIds + intArrayOf(ids.eos)
        val t = spec.maxTextLen
        if (seq.size > t) {
            throw DataError(
                "${where}question ${Py.repr(question)} with answer ${Py.repr(answer)} needs ${seq.size} tokens " +
                    "(1 <bos> + ${prompt.size} prompt + ${answerIds.size} answer + 1 <eos>) but max_text_len=$t; " +
                    "shorten the question, answer or prompt_template, or set InputSpec(max_text_len=${seq.size}) or larger " +
                    "(a bundle's length is fixed at export).",
            )
        }
        val inputIds = LongArray(t) { if (it < seq.size) seq[it].toLong() else ids.pad.toLong() }
        val labels = LongArray(t) { if (it > prompt.size && it < seq.size) seq[it].toLong() else ids.ignoreIndex.toLong() }
        return inputIds to labels
    }

    /** `(input_ids [max_text_len], length)` for inference: `<bos> prompt` then padding. */
    fun prompt(question: String): Pair<LongArray, Int> {
        val seq = intArrayOf(ids.bos) + promptIds(question)
        if (seq.size + 2 > spec.maxTextLen) {
            throw DataError(
                "question ${Py.repr(question)} needs ${seq.size} prompt tokens, leaving no room for an answer in " +
                    "max_text_len=${spec.maxTextLen}; set InputSpec(max_text_len=${seq.size + 2}) or larger.",
            )
        }
        return LongArray(spec.maxTextLen) { if (it < seq.size) seq[it].toLong() else ids.pad.toLong() } to seq.size
    }

    /** Text of generated answer ids, stopping at the first `<eos>`; pads and specials dropped. */
    fun decodeAnswer(tokenIds: List<Int>): String {
        val cut = tokenIds.indexOf(ids.eos).let { if (it < 0) tokenIds else tokenIds.subList(0, it) }
        return tokenizer.decode(cut.filter { it != ids.pad && it != ids.ignoreIndex }).trim()
    }

    fun example(image: Image, question: String, answer: String): Encoded {
        val (x, y) = text(question, answer)
        return Encoded(image(image), x, y)
    }

    /** Stack encoded examples into one batch (their number need not be [batchSize]). */
    fun batch(rows: List<Encoded>): Batch {
        val s = spec.imageSize
        val t = spec.maxTextLen
        val pixels = FloatArray(rows.size * 3 * s * s)
        val inputIds = LongArray(rows.size * t)
        val labels = LongArray(rows.size * t)
        rows.forEachIndexed { i, r ->
            r.pixels.copyInto(pixels, i * 3 * s * s)
            r.inputIds.copyInto(inputIds, i * t)
            r.labels.copyInto(labels, i * t)
        }
        return Batch(pixels, inputIds, labels, rows.size, s, t)
    }

    companion object {
        /**
         * `template.format(question=q)` for templates whose only field is `{question}` (`{{` and
         * `}}` are literal braces); any other field is refused as Python's `format` would refuse it.
         */
        fun formatPrompt(template: String, question: String): String {
            val out = StringBuilder()
            var i = 0
            val field = InputSpec.QUESTION_PLACEHOLDER
            while (i < template.length) {
                when {
                    template.startsWith("{{", i) -> { out.append('{'); i += 2 }
                    template.startsWith("}}", i) -> { out.append('}'); i += 2 }
                    template.startsWith(field, i) -> { out.append(question); i += field.length }
                    template[i] == '{' || template[i] == '}' -> throw ConfigError(
                        "prompt_template=${Py.repr(template)} has a field other than $field at position $i; " +
                            "only $field is filled in (write {{ and }} for literal braces).",
                    )
                    else -> out.append(template[i++])
                }
            }
            return out.toString()
        }

        /** `encode_image`: normalised float32 `[3, S, S]`, S = spec.imageSize. */
        fun encodeImage(image: Image, spec: InputSpec): FloatArray {
            val c = image.channels
            val h = image.height
            val w = image.width
            val chw = FloatArray(c * h * w) // [C, H, W]
            for (y in 0 until h) for (x in 0 until w) for (ch in 0 until c) chw[ch * h * w + y * w + x] = image.values[(y * w + x) * c + ch]
            val size = spec.imageSize
            val resized = if (h == size && w == size) chw else bilinearResize(chw, c, h, w, size)
            val out = FloatArray(3 * size * size)
            val plane = size * size
            for (ch in 0 until 3) {
                val mean = spec.imageMean[ch].toFloat()
                val std = spec.imageStd[ch].toFloat()
                val src = if (c == 1) 0 else ch // grey -> RGB
                for (i in 0 until plane) out[ch * plane + i] = (resized[src * plane + i] - mean) / std
            }
            return out
        }

        private class Taps(val lo: IntArray, val hi: IntArray, val weight: FloatArray)

        /** PyTorch's `area_pixel_compute_source_index` (align_corners=False), in float32 as its CPU kernel. */
        private fun taps(outSize: Int, inSize: Int): Taps {
            val scale = (inSize.toDouble() / outSize).toFloat()
            val lo = IntArray(outSize)
            val hi = IntArray(outSize)
            val weight = FloatArray(outSize)
            for (i in 0 until outSize) {
                val src = maxOf((i.toFloat() + 0.5f) * scale - 0.5f, 0f)
                lo[i] = minOf(Math.floor(src.toDouble()).toInt(), inSize - 1)
                hi[i] = minOf(lo[i] + 1, inSize - 1)
                weight[i] = src - lo[i].toFloat()
            }
            return Taps(lo, hi, weight)
        }

        /**
         * `[C, H, W]` -> `[C, size, size]` as `F.interpolate(mode="bilinear", align_corners=False,
         * antialias=False)` and mobile_peft/core/encode.py `bilinear_resize`: rows first, then columns,
         * each product and sum rounded to float32 in that order.
         */
        fun bilinearResize(x: FloatArray, c: Int, h: Int, w: Int, size: Int): FloatArray {
            val ty = taps(size, h)
            val tx = taps(size, w)
            val top = FloatArray(c * size * w) // [C, size, W]
            for (ch in 0 until c) for (oy in 0 until size) {
                val wy = ty.weight[oy]
                val a = ch * h * w + ty.lo[oy] * w
                val b = ch * h * w + ty.hi[oy] * w
                for (xx in 0 until w) top[(ch * size + oy) * w + xx] = x[a + xx] * (1f - wy) + x[b + xx] * wy
            }
            val out = FloatArray(c * size * size)
            for (ch in 0 until c) for (oy in 0 until size) {
                val row = (ch * size + oy) * w
                for (ox in 0 until size) {
                    val wx = tx.weight[ox]
                    out[(ch * size + oy) * size + ox] = top[row + tx.lo[ox]] * (1f - wx) + top[row + tx.hi[ox]] * wx
                }
            }
            return out
        }
    }
}
