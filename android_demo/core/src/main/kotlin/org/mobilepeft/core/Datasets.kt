package org.mobilepeft.core

import java.io.File
import java.nio.ByteBuffer
import java.nio.charset.CharacterCodingException
import java.nio.charset.CodingErrorAction

/** One annotation of a folder data set: the resolved image file, the question, the answer, its line. */
data class FolderExample(val image: File, val question: String, val answer: String, val line: Int, val source: String)

/**
 * The SDK's data-folder format (mobile_peft/core/datasets.py):
 *
 *     my_data/annotations.jsonl   {"image": "cat.png", "question": "what animal is this ?", "answer": "cat"}
 *     my_data/images/cat.png
 *
 * `image` is relative to the folder or to its `images/` folder; extra keys are ignored. The files
 * are untrusted input, so every line is checked before anything is returned, with the SDK's
 * messages: UTF-8, JSON, the three keys as non-empty strings of at most [MAX_TEXT_CHARS]
 * characters, an image path that stays inside the folder (no `..`, no absolute path, no link
 * out), an image the platform decodes ([checkImage]; [checkSize] gives the SDK's pixel limit).
 * Every problem is reported in one [DataError], or with `skipBad` the bad lines are left out and
 * listed in `skipped`. The train/eval split is by image, a seeded permutation of the distinct
 * images drawn exactly as numpy draws it ([NumpyRandom]), so the phone splits as the SDK does.
 */
object FolderDataset {
    const val ANNOTATIONS_FILE = "annotations.jsonl"
    const val IMAGES_DIR = "images"
    const val IMAGE = "image"
    const val QUESTION = "question"
    const val ANSWER = "answer"
    const val SPLIT_ALL = "all"
    const val SPLIT_TRAIN = "train"
    const val SPLIT_EVAL = "eval"
    const val MAX_IMAGE_PIXELS = 50_000_000L // a 48-megapixel phone photo fits; a decompression bomb does not
    const val MAX_TEXT_CHARS = 1000
    private val REQUIRED = listOf(IMAGE, QUESTION, ANSWER)
    private const val MAX_LISTED = 50
    private const val EXPECTED_LINE = """{"image": "images/x.png", "question": "...", "answer": "..."}"""

    /** The SDK's pixel limit, for a decoder that reads the size before decoding (as PIL does). */
    fun checkSize(file: File, width: Int, height: Int) {
        if (width.toLong() * height > MAX_IMAGE_PIXELS) {
            throw DataError("image ${Py.repr(file.path)} has ${width}x$height pixels, over the limit of ${Py.grouped(MAX_IMAGE_PIXELS)}; resize it")
        }
    }

    /** Every (image, question, answer) of [folder], or one [DataError] listing every bad line. */
    fun read(folder: File, checkImage: ((File) -> Unit)? = null, skipBad: Boolean = false, skipped: MutableList<String>? = null): List<FolderExample> {
        val annotations = File(folder, ANNOTATIONS_FILE)
        if (!folder.isDirectory) throw DataError("data folder $folder does not exist; expected a folder with $ANNOTATIONS_FILE.")
        if (!annotations.isFile) throw DataError("$folder has no $ANNOTATIONS_FILE; add one with a line per example like $EXPECTED_LINE.")
        var problems = mutableListOf<String>()
        val out = mutableListOf<FolderExample>()
        val images = HashMap<String, String?>() // path -> why it cannot be read (null: readable)
        for ((number, line) in lines(annotations)) {
            val lineProblems = mutableListOf<String>()
            val record = if (line == null) null.also { lineProblems += "not UTF-8 text; save the file as UTF-8" } else check(line, lineProblems)
            var path: File? = null
            if (record != null) {
                val name = record[IMAGE] as String
                path = resolve(folder, name, lineProblems)
                if (path != null) {
                    val why = images.getOrPut(path.path) { readProblem(path, checkImage) }
                    if (why != null) lineProblems += why
                }
            }
            if (record != null && lineProblems.isEmpty()) {
                out += FolderExample(path!!, record[QUESTION] as String, record[ANSWER] as String, number, "$annotations:$number")
            }
            lineProblems.forEach { problems += "line $number: $it" }
        }
        if (problems.isNotEmpty() && skipBad) {
            skipped?.addAll(problems.map { "$annotations:" + it.removePrefix("line ") })
            problems = mutableListOf()
        }
        if (problems.isNotEmpty()) {
            val listed = problems.take(MAX_LISTED)
            val more = problems.size - listed.size
            throw DataError(
                "$annotations has ${problems.size} problem(s):\n  " + listed.joinToString("\n  ") +
                    (if (more > 0) "\n  ... and $more more" else "") +
                    "\nEach line must be a JSON object like $EXPECTED_LINE with non-empty strings, the image " +
                    "relative to $folder or to its $IMAGES_DIR/ folder. Fix these lines and retry " +
                    "(or pass --skip-bad to leave them out).",
            )
        }
        if (out.isEmpty()) throw DataError("$annotations has no usable examples; add one JSON line per example like $EXPECTED_LINE.")
        return out
    }

    private fun readProblem(path: File, checkImage: ((File) -> Unit)?): String? = try {
        checkImage?.invoke(path)
        null
    } catch (e: DataError) {
        e.message
    } catch (e: Exception) {
        "cannot decode image ${Py.repr(path.path)} (${e::class.java.simpleName}: ${e.message})"
    }

    /** (line number, text) of every non-blank line, split at `\n` only; text null for a line that is not UTF-8. */
    private fun lines(annotations: File): List<Pair<Int, String?>> {
        var data = try {
            annotations.readBytes()
        } catch (e: java.io.IOException) {
            throw DataError("cannot read $annotations (${e.message})")
        }
        if (data.size >= 3 && data[0] == 0xEF.toByte() && data[1] == 0xBB.toByte() && data[2] == 0xBF.toByte()) data = data.copyOfRange(3, data.size)
        val out = mutableListOf<Pair<Int, String?>>()
        var start = 0
        var number = 1
        for (i in 0..data.size) {
            if (i < data.size && data[i] != '\n'.code.toByte()) continue
            val text = try {
                Charsets.UTF_8.newDecoder().onMalformedInput(CodingErrorAction.REPORT).onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(data, start, i - start)).toString()
            } catch (e: CharacterCodingException) {
                null
            }
            if (text == null) out += number to null else if (!text.all(::isSpace)) out += number to text
            start = i + 1
            number++
        }
        return out
    }

    /**
     * `load_folder`: all examples (`split = "all"`) or the `"train"` / `"eval"` side of the split,
     * by image: `n_eval = min(max(1, round(images * evalFraction)), images - 1)` distinct images
     * chosen by `default_rng(seed).permutation`, file order kept on each side.
     */
    fun load(
        folder: File,
        split: String = SPLIT_ALL,
        seed: Long = 0,
        evalFraction: Double = 0.2,
        checkImage: ((File) -> Unit)? = null,
        skipBad: Boolean = false,
        skipped: MutableList<String>? = null,
    ): List<FolderExample> {
        if (split !in listOf(SPLIT_ALL, SPLIT_TRAIN, SPLIT_EVAL)) throw DataError("split=${Py.repr(split)}; expected 'all', 'train' or 'eval'.")
        if (!(evalFraction > 0.0 && evalFraction < 1.0)) {
            throw DataError("eval_fraction=${Py.repr(evalFraction)} must be strictly between 0 and 1, e.g. 0.2.")
        }
        val examples = read(folder, checkImage, skipBad, skipped)
        if (split == SPLIT_ALL) return examples
        val images = examples.map { it.image.path }.distinct()
        if (images.size < 2) {
            throw DataError("$folder has ${images.size} distinct image(s); a train/eval split needs at least 2. Add images, or load it with split='all'.")
        }
        val nEval = minOf(maxOf(1, Math.rint(images.size * evalFraction).toInt()), images.size - 1)
        val order = NumpyRandom.of(seed).permutation(images.size)
        val evalImages = (0 until nEval).map { images[order[it]] }.toSet()
        return examples.filter { (it.image.path in evalImages) == (split == SPLIT_EVAL) }
    }

    private fun check(line: String, problems: MutableList<String>): Map<*, *>? {
        val record = try {
            Json.parse(line)
        } catch (e: JsonError) {
            problems += if (e.reason == Json.TOO_DEEP) "invalid JSON (nested too deeply)" else "invalid JSON (${e.reason} at column ${e.column})"
            return null
        }
        if (record !is Map<*, *>) {
            problems += "expected a JSON object, got ${Py.typeName(record)}"
            return null
        }
        for (key in REQUIRED) {
            val v = record[key]
            when {
                !record.containsKey(key) -> problems += "missing key ${Py.repr(key)}"
                v !is String -> problems += "${Py.repr(key)} must be a string, got ${Py.typeName(v)} ${Py.repr(Py.head(v, 40))}"
                v.all(::isSpace) -> problems += "${Py.repr(key)} is empty"
                v.codePointCount(0, v.length) > MAX_TEXT_CHARS -> problems +=
                    "${Py.repr(key)} has ${Py.grouped(v.codePointCount(0, v.length).toLong())} characters, over the limit of ${Py.grouped(MAX_TEXT_CHARS.toLong())}"
            }
        }
        return if (problems.isEmpty()) record else null
    }

    /**
     * The image file inside [folder] (or its images/), as `_resolve_image`: `folder / name`, then
     * `folder / images / name` (Python joins paths dropping `.` and empty parts); a path that leaves
     * the folder, or a link that points out of it, is a problem.
     */
    private fun resolve(folder: File, name: String, problems: MutableList<String>): File? {
        val parts = name.split('/').filter { it.isNotEmpty() && it != "." }
        if (name.startsWith("/") || ".." in parts || '\\' in name) {
            problems += "image path ${Py.repr(name)} leaves the data folder; give a path relative to $folder"
            return null
        }
        val root = folder.canonicalFile
        for (base in listOf(folder, File(folder, IMAGES_DIR))) {
            val candidate = parts.fold(base, ::File)
            if (candidate.isFile) {
                val real = candidate.canonicalFile
                if (!real.toPath().startsWith(root.toPath())) {
                    problems += "image ${Py.repr(name)} is a link to $real, outside the data folder"
                    return null
                }
                return candidate
            }
        }
        problems += "image file ${Py.repr(name)} not found (looked in $folder and ${File(folder, IMAGES_DIR)})"
        return null
    }

    /** Python's `str.isspace` for one character. */
    fun isSpace(c: Char): Boolean = Character.isWhitespace(c) || Character.isSpaceChar(c) || c == '\u0085'
}
