package org.mobilepeft.demo

import android.app.Activity
import android.os.Bundle
import android.os.Handler
import android.os.Looper
import android.os.SystemClock
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

/**
 * Pick a bundle pushed into app storage, train N steps on a folder data set, show the loss.
 *
 * Layout on the device (see README.md for the `adb push` commands):
 *   <external files>/bundles/<name>/manifest.json ...   one directory per bundle
 *   <external files>/data/annotations.jsonl + images/   the owner's examples
 * Checkpoints go to <internal files>/checkpoints/<name>/; training resumes from them.
 */
class MainActivity : Activity() {
    private val worker = Executors.newSingleThreadExecutor()
    private val ui = Handler(Looper.getMainLooper())
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
        steps = EditText(this).apply { inputType = InputType.TYPE_CLASS_NUMBER; setText("20"); hint = "steps" }
        val train = Button(this).apply { text = "Train" }
        log = TextView(this).apply { setTextIsSelectable(true) }
        layout.addView(bundles)
        layout.addView(steps)
        layout.addView(train)
        layout.addView(ScrollView(this).apply { addView(log) })
        setContentView(layout)

        val names = bundleRoot.listFiles { f -> File(f, Contract.MANIFEST_FILE).isFile }?.map { it.name }?.sorted().orEmpty()
        bundles.adapter = ArrayAdapter(this, android.R.layout.simple_spinner_dropdown_item, names)
        if (names.isEmpty()) say("No bundle in ${bundleRoot.path}; push one (README.md).")
        train.setOnClickListener {
            val name = bundles.selectedItem as? String ?: return@setOnClickListener
            val n = steps.text.toString().toIntOrNull() ?: 20
            train.isEnabled = false
            worker.execute {
                try {
                    runTraining(File(bundleRoot, name), n)
                } catch (e: Exception) {
                    say("error: ${e.message}")
                } finally {
                    ui.post { train.isEnabled = true }
                }
            }
        }
    }

    private fun say(line: String) {
        ui.post { log.append(line + "\n") }
    }

    private fun runTraining(bundleDir: File, steps: Int) {
        val manifest = Manifest.load(bundleDir)
        manifest.verifyFiles()
        say("bundle ${bundleDir.name}: format ${manifest.format}, ${manifest.trainable.size} trainable tensors, " +
            "${manifest.schedule.masks.size} rank masks, ${manifest.schedule.phases.size} phases; sha256 ok")
        val tokenizer = WordTokenizer.load(manifest.file(manifest.inputSpec.tokenizerFile))
        val pre = Preprocessor(manifest.inputSpec, tokenizer)
        val examples = Preprocessor.loadFolder(dataDir)
        require(examples.isNotEmpty()) { "no examples in ${dataDir.path}" }
        val ckpt = File(filesDir, "checkpoints/${bundleDir.name}")
        val (trainer, start) = BundleTrainer.open(manifest, ckpt)
        trainer.use {
            if (start > 0) say("resumed at step $start")
            val b = manifest.inputSpec.batchSize
            var phase = -1
            for (step in start until start + steps) {
                val p = manifest.schedule.phaseIndexAt(step)
                if (p != phase) { say("step $step: rank phase $p"); phase = p }
                val batch = pre.batch(List(b) { examples[(step * b + it) % examples.size] })
                val t0 = SystemClock.elapsedRealtime()
                val loss = trainer.step(step, batch)
                say("step $step  loss %.4f  %d ms".format(loss, SystemClock.elapsedRealtime() - t0))
                if ((step + 1) % CHECKPOINT_EVERY == 0) trainer.saveCheckpoint(ckpt, step + 1)
            }
            trainer.saveCheckpoint(ckpt, start + steps)
            say("checkpoint: ${ckpt.path}")
        }
    }

    override fun onDestroy() {
        worker.shutdownNow()
        super.onDestroy()
    }

    companion object {
        private const val CHECKPOINT_EVERY = 10
    }
}
