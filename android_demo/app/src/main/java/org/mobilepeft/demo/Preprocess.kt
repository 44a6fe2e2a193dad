package org.mobilepeft.demo

import android.graphics.Bitmap
import android.graphics.BitmapFactory
import java.io.File
import java.util.regex.Pattern
import org.json.JSONObject

/**
 * Constants of the input layout that live in the SDK's data package, not in the bundle contract.
 * `tests/demo_apps/test_contract_mirror.py` checks them against mobile_peft/data/{spec,folder}.py.
 */
object PreprocessDefaults {
    const val IGNORE_INDEX = -100L // mobile_peft.data.spec.IGNORE_INDEX: labels not scored
    const val PAD_TOKEN = "<pad>"
    const val BOS_TOKEN = "<bos>"
    const val EOS_TOKEN = "<eos>"
    const val QUESTION_PLACEHOLDER = "{question}"
    const val ANNOTATIONS_FILE = "annotations.jsonl" // mobile_peft.data.folder.ANNOTATIONS_FILE
    const val IMAGES_DIR = "images"
}

/**
 * The bundled `tokenizer.json` (Hugging Face tokenizers format), WordLevel models only, applied as
 * the `tokenizers` library does for the SDK's word tokeniser:
 *   1. split out added/special tokens (matched verbatim, never normalised);
 *   2. normaliser `Lowercase` (if present);
 *   3. pre-tokeniser `Whitespace` (regex `\w+|[^\w\s]+`, Unicode classes) then `Punctuation`
 *      (behaviour `Isolated`: every punctuation character becomes its own piece);
 *   4. look each piece up in the vocabulary, unknown pieces -> `unk_token`.
 * Any other model or pre-tokeniser type is refused rather than approximated.
 */
class WordTokenizer private constructor(
    private val vocab: Map<String, Int>,
    private val unkId: Int,
    private val lowercase: Boolean,
    private val punctuationSplit: Boolean,
    private val added: List<String>,
) {
    fun idOf(token: String): Int? = vocab[token]

    fun encode(text: String): IntArray {
        val out = ArrayList<Int>()
        for ((segment, isAdded) in splitAdded(text)) {
            if (isAdded) {
                out += vocab.getValue(segment)
                continue
            }
            val normalised = if (lowercase) segment.lowercase() else segment
            val m = WHITESPACE.matcher(normalised)
            while (m.find()) {
                for (piece in if (punctuationSplit) isolatePunctuation(m.group()) else listOf(m.group())) {
                    out += vocab[piece] ?: unkId
                }
            }
        }
        return out.toIntArray()
    }

    private fun splitAdded(text: String): List<Pair<String, Boolean>> {
        if (added.isEmpty()) return listOf(text to false)
        val parts = mutableListOf<Pair<String, Boolean>>()
        var i = 0
        var start = 0
        while (i < text.length) {
            val hit = added.firstOrNull { text.startsWith(it, i) } // longest first: `added` is sorted so
            if (hit != null) {
                if (i > start) parts += text.substring(start, i) to false
                parts += hit to true
                i += hit.length
                start = i
            } else {
                i++
            }
        }
        if (start < text.length) parts += text.substring(start) to false
        return parts
    }

    companion object {
        // Same pattern as tokenizers' Whitespace pre-tokeniser; UNICODE_CHARACTER_CLASS makes \w and \s
        // Unicode-aware as in Rust's regex. UNVERIFIED: flag support on every Android API level (ICU).
        private val WHITESPACE: Pattern = Pattern.compile("\\w+|[^\\w\\s]+", Pattern.UNICODE_CHARACTER_CLASS)

        private fun isPunctuation(c: Char): Boolean {
            // Rust: char::is_ascii_punctuation() || Unicode general category P*.
            if (c.code < 128) return c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
            return when (Character.getType(c).toByte()) {
                Character.CONNECTOR_PUNCTUATION, Character.DASH_PUNCTUATION, Character.START_PUNCTUATION,
                Character.END_PUNCTUATION, Character.INITIAL_QUOTE_PUNCTUATION, Character.FINAL_QUOTE_PUNCTUATION,
                Character.OTHER_PUNCTUATION -> true
                else -> false
            }
        }

        private fun isolatePunctuation(piece: String): List<String> {
            val out = mutableListOf<String>()
            val run = StringBuilder()
            for (c in piece) {
                if (isPunctuation(c)) {
                    if (run.isNotEmpty()) { out += run.toString(); run.clear() }
                    out += c.toString()
                } else {
                    run.append(c)
                }
            }
            if (run.isNotEmpty()) out += run.toString()
            return out
        }

        private fun types(node: JSONObject?, listKey: String): List<String> = when {
            node == null -> emptyList()
            node.optString("type") == "Sequence" -> {
                val a = node.getJSONArray(listKey)
                (0 until a.length()).map { a.getJSONObject(it).optString("type") }
            }
            else -> listOf(node.optString("type"))
        }

        fun load(file: File): WordTokenizer {
            val root = JSONObject(file.readText())
            val model = root.getJSONObject("model")
            if (model.optString("type") != "WordLevel") {
                throw BundleError("${file.name}: model type '${model.optString("type")}' is not supported by this demo (WordLevel only).")
            }
            val v = model.getJSONObject("vocab")
            val vocab = v.keys().asSequence().associateWith(v::getInt)
            val unk = vocab[model.optString("unk_token")]
                ?: throw BundleError("${file.name}: unk_token '${model.optString("unk_token")}' is not in the vocabulary.")
            val normalisers = types(root.optJSONObject("normalizer"), "normalizers")
            val preTokenisers = types(root.optJSONObject("pre_tokenizer"), "pretokenizers")
            val unsupportedNorm = normalisers - setOf("Lowercase")
            val unsupportedPre = preTokenisers - setOf("Whitespace", "Punctuation")
            if (unsupportedNorm.isNotEmpty() || unsupportedPre.isNotEmpty() || "Whitespace" !in preTokenisers) {
                throw BundleError("${file.name}: normalizer $normalisers / pre_tokenizer $preTokenisers not supported (expected Lowercase + Whitespace[, Punctuation]).")
            }
            val addedJson = root.optJSONArray("added_tokens")
            val added = (0 until (addedJson?.length() ?: 0)).map { addedJson!!.getJSONObject(it).getString("content") }
                .filter { it in vocab }.sortedByDescending { it.length }
            return WordTokenizer(vocab, unk, "Lowercase" in normalisers, "Punctuation" in preTokenisers, added)
        }
    }
}

/** One annotation line of a folder data set (the SDK's `annotations.jsonl` format). */
data class Example(val image: File, val question: String, val answer: String)

/** Fixed-shape inputs of one training step; row-major, batch first. */
class Batch(
    val pixelValues: FloatArray, // [B, 3, S, S]
    val inputIds: LongArray, // [B, T]
    val labels: LongArray, // [B, T]
    val batchSize: Int,
    val imageSize: Int,
    val maxTextLen: Int,
) {
    val pixelShape get() = longArrayOf(batchSize.toLong(), 3, imageSize.toLong(), imageSize.toLong())
    val textShape get() = longArrayOf(batchSize.toLong(), maxTextLen.toLong())
}

/**
 * Builds model inputs exactly as mobile_peft/data/encode.py does from the manifest's input spec:
 * bilinear resize (align_corners=False, no antialiasing) of the 0..1 image, `(x - mean) / std`;
 * `<bos> tok(prompt) tok(answer) <eos> <pad>...`; labels -100 except answer tokens and `<eos>`.
 */
class Preprocessor(private val spec: InputSpec, private val tokenizer: WordTokenizer) {
    // input_spec.token_ids is {"pad", "bos", "eos", "ignore_index"} (export/bundle.py); a bundle without it
    // falls back to the vocabulary ids of InputSpec's default token strings.
    private fun special(role: String, token: String): Int =
        spec.tokenIds[role] ?: tokenizer.idOf(token)
            ?: throw BundleError("no id for the $role token '$token' in input_spec.token_ids or tokenizer.json")

    private val padId = special("pad", PreprocessDefaults.PAD_TOKEN)
    private val bosId = special("bos", PreprocessDefaults.BOS_TOKEN)
    private val eosId = special("eos", PreprocessDefaults.EOS_TOKEN)

    /** Python's `prompt_template.format(question=q)` for templates whose only field is {question}. */
    private fun prompt(question: String): String =
        spec.promptTemplate.replace(PreprocessDefaults.QUESTION_PLACEHOLDER, "\u0000").replace("{{", "{").replace("}}", "}")
            .replace("\u0000", question.lowercase()) // InputSpec.lowercase defaults to true

    fun encodeText(question: String, answer: String): Pair<LongArray, LongArray> {
        val promptIds = tokenizer.encode(prompt(question))
        val answerIds = tokenizer.encode(answer.lowercase())
        require(answerIds.isNotEmpty()) { "answer '$answer' encodes to no tokens" }
        val ids = intArrayOf(bosId) + promptIds + answerIds + intArrayOf(eosId)
        require(ids.size <= spec.maxTextLen) {
            "question '$question' with answer '$answer' needs ${ids.size} tokens but max_text_len=${spec.maxTextLen}; shorten it"
        }
        val inputIds = LongArray(spec.maxTextLen) { if (it < ids.size) ids[it].toLong() else padId.toLong() }
        val labels = LongArray(spec.maxTextLen) { PreprocessDefaults.IGNORE_INDEX }
        val firstAnswer = 1 + promptIds.size
        for (i in firstAnswer until ids.size) labels[i] = ids[i].toLong()
        return inputIds to labels
    }

    /** RGB 0..1 planes [3, H, W] -> normalised [3, S, S]. */
    fun encodePlanes(rgb: FloatArray, h: Int, w: Int): FloatArray {
        val s = spec.imageSize
        val resized = if (h == s && w == s) rgb else resizeBilinear(rgb, 3, h, w, s, s)
        for (c in 0 until 3) {
            val off = c * s * s
            for (i in 0 until s * s) resized[off + i] = (resized[off + i] - spec.imageMean[c]) / spec.imageStd[c]
        }
        return resized
    }

    fun encodeImage(file: File): FloatArray {
        val opts = BitmapFactory.Options().apply {
            inPreferredConfig = Bitmap.Config.ARGB_8888
            inPremultiplied = false // PIL's convert("RGB") drops alpha without premultiplying
        }
        val bmp = BitmapFactory.decodeFile(file.path, opts) ?: throw IllegalArgumentException("cannot decode image ${file.path}")
        val w = bmp.width
        val h = bmp.height
        val px = IntArray(w * h)
        bmp.getPixels(px, 0, w, 0, 0, w, h)
        bmp.recycle()
        val planes = FloatArray(3 * h * w)
        for (i in 0 until h * w) {
            val p = px[i]
            planes[i] = ((p shr 16) and 0xFF) / 255f
            planes[h * w + i] = ((p shr 8) and 0xFF) / 255f
            planes[2 * h * w + i] = (p and 0xFF) / 255f
        }
        return encodePlanes(planes, h, w)
    }

    fun batch(examples: List<Example>): Batch {
        val b = examples.size
        val s = spec.imageSize
        val t = spec.maxTextLen
        val pixels = FloatArray(b * 3 * s * s)
        val ids = LongArray(b * t)
        val labels = LongArray(b * t)
        examples.forEachIndexed { i, ex ->
            encodeImage(ex.image).copyInto(pixels, i * 3 * s * s)
            val (x, y) = encodeText(ex.question, ex.answer)
            x.copyInto(ids, i * t)
            y.copyInto(labels, i * t)
        }
        return Batch(pixels, ids, labels, b, s, t)
    }

    companion object {
        /**
         * torch.nn.functional.interpolate(mode="bilinear", align_corners=False, antialias=False) on
         * [C, H, W] planes: source coordinate `(dst + 0.5) * in / out - 0.5`, clamped at 0.
         */
        fun resizeBilinear(src: FloatArray, c: Int, h: Int, w: Int, outH: Int, outW: Int): FloatArray {
            val out = FloatArray(c * outH * outW)
            val sy = h.toFloat() / outH
            val sx = w.toFloat() / outW
            for (oy in 0 until outH) {
                val fy = maxOf((oy + 0.5f) * sy - 0.5f, 0f)
                val y0 = fy.toInt()
                val y1 = if (y0 < h - 1) y0 + 1 else y0
                val ly = fy - y0
                for (ox in 0 until outW) {
                    val fx = maxOf((ox + 0.5f) * sx - 0.5f, 0f)
                    val x0 = fx.toInt()
                    val x1 = if (x0 < w - 1) x0 + 1 else x0
                    val lx = fx - x0
                    for (ch in 0 until c) {
                        val base = ch * h * w
                        val top = src[base + y0 * w + x0] * (1 - lx) + src[base + y0 * w + x1] * lx
                        val bottom = src[base + y1 * w + x0] * (1 - lx) + src[base + y1 * w + x1] * lx
                        out[ch * outH * outW + oy * outW + ox] = top * (1 - ly) + bottom * ly
                    }
                }
            }
            return out
        }

        /** `annotations.jsonl` + `images/` as in mobile_peft/data/folder.py; image paths relative to the folder or images/. */
        fun loadFolder(dir: File): List<Example> {
            val ann = File(dir, PreprocessDefaults.ANNOTATIONS_FILE)
            require(ann.isFile) { "${ann.path} not found; a data folder needs ${PreprocessDefaults.ANNOTATIONS_FILE} and ${PreprocessDefaults.IMAGES_DIR}/" }
            val problems = mutableListOf<String>()
            val out = mutableListOf<Example>()
            ann.readLines().forEachIndexed { n, line ->
                if (line.isBlank()) return@forEachIndexed
                try {
                    val o = JSONObject(line)
                    val name = o.getString("image")
                    val img = listOf(File(dir, name), File(File(dir, PreprocessDefaults.IMAGES_DIR), name)).firstOrNull { it.isFile }
                    if (img == null) problems += "line ${n + 1}: image '$name' not found" else out += Example(img, o.getString("question"), o.getString("answer"))
                } catch (e: Exception) {
                    problems += "line ${n + 1}: ${e.message}"
                }
            }
            require(problems.isEmpty()) { "${ann.path}:\n  - " + problems.joinToString("\n  - ") }
            return out
        }
    }
}
