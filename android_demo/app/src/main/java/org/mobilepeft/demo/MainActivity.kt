package org.mobilepeft.demo

import android.app.Activity
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.text.InputType
import android.widget.ArrayAdapter
import android.widget.Button
import android.widget.EditText
import android.widget.LinearLayout
import android.widget.ScrollView
import android.widget.Spinner
import android.widget.TextView
import java.io.File
import java.util.concurrent.Executors
import java.util.concurrent.atomic.AtomicBoolean
import org.mobilepeft.core.AdapterFiles
import org.mobilepeft.core.CheckpointStore
import org.mobilepeft.core.Checksums
import org.mobilepeft.core.Contract
import org.mobilepeft.core.Encoded
import org.mobilepeft.core.Encoder
import org.mobilepeft.core.FolderDataset
import org.mobilepeft.core.Image
import org.mobilepeft.core.Manifest
import org.mobilepeft.core.StopReason
import org.mobilepeft.core.TrainListener
import org.mobilepeft.core.TrainOptions
import org.mobilepeft.core.TrainerFactory
import org.mobilepeft.core.TrainingLoop
import org.mobilepeft.core.WordLevelTokenizer

/**
 * Pick a bundle pushed into app storage, train on a folder data set up to N steps, show the loss;
 * Stop cancels after the current step. Everything but the UI, the image decoder and the two
 * engines ([EtTrainer], [OrtTrainer]) is the core (`android_demo/core`, tested on the JVM).
 *
 * Layout on the device (see README.md for the `adb push` commands):
 *   <external files>/bundles/<name>/manifest.json ...   one directory per bundle
 *   <external files>/data/annotations.jsonl + images/   the owner's examples
 * A run lives in <internal files>/runs/<bundle name>-<manifest sha256 prefix>/ (checkpoints/, and the
 * personal adapter's two files at the end); training resumes from its newest checkpoint.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val ui = Handler(Looper.getMainLooper())
    private val cancel = AtomicBoolean(false)
    private lateinit var log: TextView
    private lateinit var bundles: Spinner
    private lateinit var steps: EditText

    private val root: File get() = getExternalFilesDir(null) ?: filesDir
    private val bundleRoot: File get() = File(root, "bundles")
    private val dataDir: File get() = File(root, "data")

    override fun onCreate(savedInstanceState: Bundle?) {
        super.onCreate(savedInstanceState)
        val layout = LinearLayout(this).apply { orientation = LinearLayout.VERTICAL; setPadding(32, 32, 32, 32) }
        bundles = Spinner(this)
        steps = EditText(this).apply { inputType = InputType.TYPE_CLASS_NUMBER; setText("20"); hint = "total steps" }
        val train = Button(this).apply { text = "Train" }
        val stop = Button(this).apply { text = "Stop"; isEnabled = false }
        log = TextView(this).apply { setTextIsSelectable(true) }
        listOf(bundles, steps, train, stop).forEach(layout::addView)
        layout.addView(ScrollView(this).apply { addView(log) })
        setContentView(layout)

        val names = bundleRoot.listFiles { f -> File(f, Contract.MANIFEST_FILE).isFile }?.map { it.name }?.sorted().orEmpty()
        bundles.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, names)
        if (names.isEmpty()) say("No bundle in ${bundleRoot.path}; push one (README.md).")
        stop.setOnClickListener { cancel.set(true) }
        train.setOnClickListener {
            val name = bundles.selectedItem as? String ?: return@setOnClickListener
            val n = steps.text.toString().toIntOrNull() ?: 20
            train.isEnabled = false
            stop.isEnabled = true
            cancel.set(false)
            worker.execute {
                try {
                    runTraining(File(bundleRoot, name), n)
                } catch (e: Exception) {
                    say("error: ${e.message}")
                } finally {
                    ui.post { train.isEnabled = true; stop.isEnabled = false }
                }
            }
        }
    }

    private fun say(line: String) {
        ui.post { log.append(line + "\n") }
    }

    private fun runTraining(bundleDir: File, totalSteps: Int) {
        val manifest = Manifest.validateBundle(bundleDir) // structure, types, every file's size + sha256
        say("bundle ${bundleDir.name}: format ${manifest.format}, ${manifest.trainable.size} trainable tensors, " +
            "${manifest.schedule.maskInputs.size} rank masks, ${manifest.schedule.phases.size} phases; sha256 ok")
        val encoder = Encoder(manifest.inputSpec, WordLevelTokenizer.load(File(bundleDir, manifest.inputSpec.tokenizerFile)))
        val images = HashMap<String, Image>() // decoded once, while the data folder is checked
        val skipped = mutableListOf<String>()
        val examples = FolderDataset.load(dataDir, split = FolderDataset.SPLIT_TRAIN, seed = SEED, checkImage = { images[it.path] = AndroidImages.decode(it) },
            skipBad = true, skipped = skipped)
        skipped.forEach { say("skipped $it") }
        // Every text is encoded before the first step, so a line too long for the bundle fails now.
        val texts = examples.map { encoder.text(it.question, it.answer, it.source) }
        val encoded = HashMap<Int, Encoded>()
        val batchOf = { indices: IntArray ->
            encoder.batch(indices.map { i -> encoded.getOrPut(i) { Encoded(encoder.image(images.getValue(examples[i].image.path)), texts[i].first, texts[i].second) } })
        }
        val bundleId = Checksums.sha256Of(File(bundleDir, Contract.MANIFEST_FILE))
        val runDir = File(filesDir, "runs/${bundleDir.name}-${bundleId.take(12)}")
        val factory = TrainerFactory { from ->
            when (manifest.format) {
                Contract.FORMAT_PTE -> EtTrainer.open(manifest, bundleDir, from)
                Contract.FORMAT_ONNX -> OrtTrainer.open(manifest, bundleDir, from)
                else -> throw IllegalArgumentException("format '${manifest.format}' does not train on Android (Core ML bundles are iOS-only).")
            }
        }
        val listener = object : TrainListener {
            private var started = 0L

            override fun onStep(step: Int, loss: Float) {
                val now = System.nanoTime()
                say("step $step  loss %.4f  %d ms".format(loss, if (started == 0L) 0 else (now - started) / 1_000_000))
                started = now
            }

            override fun onBadStep(step: Int, loss: Float, badSteps: Int) = say("step $step: loss $loss not applied ($badSteps bad so far)")
            override fun onPhase(step: Int, phase: Int) = say("step $step: rank phase $phase")
            override fun onCheckpoint(step: Int, dir: File) = say("checkpoint ${dir.name}")
        }
        val loop = TrainingLoop(
            manifest.schedule, bundleId, examples.size, manifest.inputSpec.batchSize, batchOf,
            TrainOptions(totalSteps, checkpointEvery = CHECKPOINT_EVERY, seed = SEED), CheckpointStore(runDir), factory,
            cancelled = cancel::get, listener = listener,
        )
        val result = loop.run(resume = true)
        result.resumedFrom?.let { say("resumed at step $it") }
        say(if (result.stop == StopReason.CANCELLED) "stopped at step ${result.step}" else "done: ${result.step} steps")
        if (result.parameters.isNotEmpty()) {
            val files = AdapterFiles.effectiveAdapter(manifest.schedule, manifest.trainable, manifest.sdkVersion, result.parameters, result.masks)
            say("personal adapter: ${AdapterFiles.write(runDir, files).path}") // beside checkpoints/, as the SDK's runtime writes it
        } else {
            say("checkpoint ${result.checkpoint?.path}: the SDK writes the personal adapter from it")
        }
    }

    override fun onDestroy() {
        cancel.set(true)
        worker.shutdownNow()
        super.onDestroy()
    }

    companion object {
        private const val CHECKPOINT_EVERY = 10
        private const val SEED = 0L
    }
}
