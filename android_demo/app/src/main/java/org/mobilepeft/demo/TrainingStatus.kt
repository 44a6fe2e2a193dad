package org.mobilepeft.demo

import android.os.Handler
import android.os.Looper
import java.io.File
import java.util.concurrent.CopyOnWriteArraySet

/** What a run is doing, for the UI and the notification. */
enum class RunPhase { IDLE, PREPARING, EVALUATING, TRAINING, DONE, CANCELLED, FAILED }

/**
 * One immutable snapshot of the training run ([TrainingMonitor] publishes a new one on every
 * change). Accuracies are fractions in [0, 1]; memory is the process's PSS in kB
 * (`Debug.getPss()`, the "TOTAL PSS" of `dumpsys meminfo`).
 */
data class TrainingStatus(
    val phase: RunPhase = RunPhase.IDLE,
    val bundle: String? = null,
    val step: Int = 0,
    val totalSteps: Int = 0,
    val losses: List<Float> = emptyList(),
    val lastStepMs: Long? = null,
    val pssKb: Long? = null,
    val peakPssKb: Long? = null,
    val accuracyBefore: Double? = null,
    val accuracyAfter: Double? = null,
    val evalExamples: Int? = null,
    val trainExamples: Int? = null,
    val adapterDir: File? = null,
    val message: String = "",
    val log: List<String> = emptyList(),
) {
    val running: Boolean get() = phase == RunPhase.PREPARING || phase == RunPhase.EVALUATING || phase == RunPhase.TRAINING

    fun logged(line: String): TrainingStatus = copy(log = (log + line).takeLast(MAX_LOG))

    companion object {
        private const val MAX_LOG = 200
    }
}

/**
 * The process-wide status of the one training run, owned by [TrainingService] and read by
 * [MainActivity]: the activity is recreated on rotation (and may be gone while the service
 * trains), so it re-attaches here instead of holding the run. Observers are called on the main
 * thread with the newest snapshot.
 */
object TrainingMonitor {
    private val main = Handler(Looper.getMainLooper())
    private val observers = CopyOnWriteArraySet<(TrainingStatus) -> Unit>()

    @Volatile
    var status: TrainingStatus = TrainingStatus()
        private set

    @Synchronized
    fun update(change: (TrainingStatus) -> TrainingStatus) {
        val next = change(status)
        status = next
        main.post { observers.forEach { it(next) } }
    }

    fun observe(observer: (TrainingStatus) -> Unit) {
        observers += observer
        main.post { observer(status) }
    }

    fun stopObserving(observer: (TrainingStatus) -> Unit) {
        observers -= observer
    }
}
